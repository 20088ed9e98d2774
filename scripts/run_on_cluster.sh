#!/usr/bin/env bash
# Run the nightly pipeline (or one stage) with spark-submit on the local standalone cluster
# that scripts/cluster.sh starts; Horovod ranks run inside Spark tasks on the executors
# (train.launcher=horovod-spark, one rank per executor core slot).
#
#   scripts/cluster.sh start
#   scripts/run_on_cluster.sh [ytspark pipeline options]      # e.g. --output /tmp/yt --set ranker.epochs=1
#   YTSPARK_JOB=prepare scripts/run_on_cluster.sh --events ... --output ...   # any jobs/<name>.py
#   scripts/cluster.sh stop
#
# Defaults put before your options (yours win): --profile local --output <repo>/out/cluster
#   --set train.launcher=horovod-spark --set train.num_proc=$YTSPARK_NUM_PROC (2 = 2 workers x 1 core)
#   --set train.threads_per_proc=1
# A relative --output is made absolute here: executors (and the Horovod ranks on them) run in
# their own working directories, so a relative path would point somewhere else on each.
# Environment: YTSPARK_MASTER (spark://127.0.0.1:7077), YTSPARK_JOB (nightly), YTSPARK_NUM_PROC (2),
#   YTSPARK_EXECUTOR_MEMORY (2g), YTSPARK_DRIVER_MEMORY (2g), YTSPARK_SUBMIT_ARGS (extra spark-submit
#   options, word-split, e.g. "--conf spark.ui.port=4099").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${YTSPARK_PYTHON:-$ROOT/.venv/bin/python}"
MASTER="${YTSPARK_MASTER:-spark://127.0.0.1:${YTSPARK_MASTER_PORT:-7077}}"
JOB="${YTSPARK_JOB:-nightly}"
JOB_FILE="$ROOT/jobs/${JOB//-/_}.py"
[ -f "$JOB_FILE" ] || { echo "run_on_cluster.sh: no job $JOB_FILE (YTSPARK_JOB is one of: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' '))" >&2; exit 1; }
SPARK_HOME="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"

# Make --output / --output=... absolute; everything else is passed through untouched.
args=() out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out="$2"; shift 2 ;;
    --output=*) out="${1#--output=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
out="${out:-$ROOT/out/cluster}"
case "$out" in
  *://*|/*) ;;
  *) out="$PWD/$out" ;;
esac

export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck disable=SC2086  # YTSPARK_SUBMIT_ARGS is deliberately word-split
exec "$SPARK_HOME/bin/spark-submit" \
  --master "$MASTER" \
  --driver-memory "${YTSPARK_DRIVER_MEMORY:-2g}" \
  --executor-memory "${YTSPARK_EXECUTOR_MEMORY:-2g}" \
  --conf spark.driver.host=127.0.0.1 \
  --conf spark.pyspark.python="$PY" \
  --conf spark.executorEnv.PYTHONPATH="$ROOT" \
  ${YTSPARK_SUBMIT_ARGS:-} \
  "$JOB_FILE" \
  --profile local \
  --set train.launcher=horovod-spark \
  --set train.num_proc="${YTSPARK_NUM_PROC:-2}" \
  --set train.threads_per_proc=1 \
  --output "$out" \
  "${args[@]}"

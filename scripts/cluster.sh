#!/usr/bin/env bash
# A Spark standalone cluster on this machine, from the pyspark installation in .venv:
# one master and two workers (1 core, ~3 GiB each), all bound to 127.0.0.1.
#
#   scripts/cluster.sh start    # idempotent; waits until both workers are registered
#   scripts/cluster.sh status   # master URL, workers ALIVE, running apps (exit 1 when down)
#   scripts/cluster.sh stop     # SIGTERM, then SIGKILL after a grace period; idempotent
#
# Everything (pid files, logs, worker dirs) lives under $YTSPARK_CLUSTER_DIR
# (default /tmp/ytspark-cluster). Knobs (environment):
#   YTSPARK_MASTER_PORT=7077  YTSPARK_MASTER_WEBUI_PORT=8080  YTSPARK_WORKER_WEBUI_PORT=8081 (+1 per worker)
#   YTSPARK_WORKERS=2  YTSPARK_WORKER_CORES=1  YTSPARK_WORKER_MEMORY=3g  YTSPARK_DAEMON_MEMORY=512m
#   YTSPARK_PYTHON=<repo>/.venv/bin/python (what executors run as PYSPARK_PYTHON)
#   YTSPARK_WORKER_PRIVATE_TMP=0: 1 starts each worker in its own mount namespace (unshare -m, needs root or
#     CAP_SYS_ADMIN) with a private tmpfs over /tmp and over its work dir, so that, as on a real cluster,
#     workers (their executors, Python workers and Horovod ranks) share no scratch disk with each other or the
#     driver; use an --output every node sees outside /tmp (tests/test_cluster.py, "no shared disk")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${YTSPARK_PYTHON:-$ROOT/.venv/bin/python}"
DIR="${YTSPARK_CLUSTER_DIR:-/tmp/ytspark-cluster}"
HOST=127.0.0.1
PORT="${YTSPARK_MASTER_PORT:-7077}"
UI_PORT="${YTSPARK_MASTER_WEBUI_PORT:-8080}"
WORKER_UI_PORT="${YTSPARK_WORKER_WEBUI_PORT:-8081}"
WORKERS="${YTSPARK_WORKERS:-2}"
CORES="${YTSPARK_WORKER_CORES:-1}"
MEMORY="${YTSPARK_WORKER_MEMORY:-3g}"
MASTER_URL="spark://$HOST:$PORT"
JSON_URL="http://$HOST:$UI_PORT/json/"
START_TIMEOUT="${YTSPARK_CLUSTER_START_TIMEOUT:-180}"
PRIVATE_TMP="${YTSPARK_WORKER_PRIVATE_TMP:-0}"

die() { echo "cluster.sh: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY: run 'make run' (or scripts/setup_env.sh) to build .venv, or set YTSPARK_PYTHON"
SPARK_HOME="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" \
  || die "pyspark is not importable by $PY"
[ -x "$SPARK_HOME/bin/spark-class" ] || die "no $SPARK_HOME/bin/spark-class: reinstall pyspark in $PY's environment"
command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] || die "no java on PATH and JAVA_HOME unset: install a JDK 8/11/17"

export SPARK_HOME SPARK_LOCAL_IP="$HOST" SPARK_LOCAL_HOSTNAME="$HOST"
export SPARK_CONF_DIR="$DIR/conf"             # an empty conf dir: nothing from elsewhere leaks in
export SPARK_DAEMON_MEMORY="${YTSPARK_DAEMON_MEMORY:-512m}"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
# Executors import ytspark from the repo even where the editable install is missing.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

master_json() { "$PY" - "$JSON_URL" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(json.dumps(json.load(r)))
except Exception:
    sys.exit(1)
EOF
}

alive_workers() {  # number of ALIVE workers registered with the master (0 when it does not answer)
  master_json 2>/dev/null | "$PY" -c 'import json,sys; print(sum(w["state"]=="ALIVE" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null || echo 0
}

launch() {  # launch NAME CLASS ARGS...: detached JVM, pid in $DIR/NAME.pid, log in $DIR/logs/NAME.log
  local name=$1; shift
  if alive "$DIR/$name.pid"; then echo "$name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  local run=("$SPARK_HOME/bin/spark-class")
  if [ "$PRIVATE_TMP" = 1 ] && [[ $name == worker* ]]; then
    # unshare (no --fork) and sh exec in place, so $! is still the JVM's pid; the tmpfs mounts exist only in
    # this worker's namespace (and its executors'), and vanish with it
    # A checkout (its .venv, Spark, the shared output under out/) that itself lies under /tmp is bound back
    # over the private /tmp through a staging mount, so the worker still sees it (a fresh-clone CI in /tmp).
    run=(unshare -m --propagation private sh -c \
         'keep=$2; if [ "${keep#/tmp/}" != "$keep" ]; then mount -t tmpfs ytspark-keep /mnt && mkdir /mnt/keep && mount --bind "$keep" /mnt/keep || exit 1; fi
          mount -t tmpfs -o mode=1777 ytspark-private /tmp && mkdir -p "$1" && mount -t tmpfs ytspark-private "$1" || exit 1
          if [ "${keep#/tmp/}" != "$keep" ]; then mkdir -p "$keep" && mount --bind /mnt/keep "$keep" || exit 1; fi
          shift 2 && exec "$@"' \
         sh "$DIR/$name" "$ROOT" "$SPARK_HOME/bin/spark-class")
  fi
  # spark-class execs java, so $! is the JVM's pid; setsid detaches it from this shell's session.
  setsid nohup "${run[@]}" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
  echo "$name started (pid $!, log $DIR/logs/$name.log)"
}

start() {
  mkdir -p "$DIR/logs" "$DIR/conf"
  if [ "$PRIVATE_TMP" = 1 ]; then
    unshare -m --propagation private sh -c 'mount -t tmpfs ytspark-probe /tmp' 2>/dev/null \
      || die "YTSPARK_WORKER_PRIVATE_TMP=1 needs 'unshare -m' and tmpfs mounts (root or CAP_SYS_ADMIN); unset it"
  fi
  launch master org.apache.spark.deploy.master.Master --host "$HOST" --port "$PORT" --webui-port "$UI_PORT"
  local t=0
  until master_json >/dev/null 2>&1; do
    alive "$DIR/master.pid" || die "master exited; see $DIR/logs/master.log"
    [ $t -lt "$START_TIMEOUT" ] || die "master not answering at $JSON_URL after ${START_TIMEOUT}s; see $DIR/logs/master.log"
    sleep 1; t=$((t + 1))
  done
  for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$DIR/worker$i"
    launch "worker$i" org.apache.spark.deploy.worker.Worker --host "$HOST" --cores "$CORES" --memory "$MEMORY" \
      --webui-port $((WORKER_UI_PORT + i - 1)) --work-dir "$DIR/worker$i" "$MASTER_URL"
  done
  t=0
  until [ "$(alive_workers)" -ge "$WORKERS" ]; do
    for i in $(seq 1 "$WORKERS"); do
      alive "$DIR/worker$i.pid" || die "worker$i exited; see $DIR/logs/worker$i.log"
    done
    [ $t -lt "$START_TIMEOUT" ] || die "only $(alive_workers)/$WORKERS workers registered after ${START_TIMEOUT}s; see $DIR/logs/"
    sleep 1; t=$((t + 1))
  done
  echo "cluster up: $MASTER_URL, $WORKERS workers x $CORES core(s) x $MEMORY, UI http://$HOST:$UI_PORT"
}

stop_one() {  # stop NAME: SIGTERM its JVM and the executors it launched, SIGKILL what is left after 20 s
  local pidf="$DIR/$1.pid" pid kids
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kids=$(pgrep -P "$pid" || true)   # executor JVMs of a worker
    kill "$pid" $kids 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" $kids 2>/dev/null || true
    echo "$1 stopped (pid $pid)"
  fi
  rm -f "$pidf"
}

stop() {
  for i in $(seq "$WORKERS" -1 1); do stop_one "worker$i"; done
  # workers beyond YTSPARK_WORKERS from an earlier start
  for f in "$DIR"/worker*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done
  stop_one master
}

SUMMARY_PY='
import json, sys
m = json.load(sys.stdin)
alive = sum(w["state"] == "ALIVE" for w in m["workers"])
print("master %s %s: %d worker(s) alive, %d cores, %d MiB, %d running app(s)"
      % (m["url"], m["status"], alive, m["cores"], m["memory"], len(m["activeapps"])))'

status() {
  for f in "$DIR"/master.pid "$DIR"/worker*.pid; do
    [ -e "$f" ] || continue
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "$(basename "$f" .pid): dead (stale pid file)"; fi
  done
  if json=$(master_json 2>/dev/null); then
    echo "$json" | "$PY" -c "$SUMMARY_PY"
    return 0
  fi
  echo "master not answering at $JSON_URL"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) echo "$MASTER_URL" ;;
  *) die "usage: $0 start|stop|status|url" ;;
esac

#!/usr/bin/env bash
# Create .venv (if missing) with the whole pinned stack, Horovod included.
# Idempotent: a stamp file keyed by the lock file's hash skips the work.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.ytspark-stamp"
want=$(cat requirements.lock scripts/install_horovod.sh pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
$PY -m pip install -q --upgrade pip==24.3.1 >/dev/null 2>&1 || true
# torch first, by exact pin: the CPU wheel on disk (an unpinned torch pulls CUDA).
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -r requirements.lock
PYTHON=$PY bash scripts/install_horovod.sh
$PY -m pip install -q --no-deps -e .
$PY -m pip check
echo "$want" > "$STAMP"
echo "[setup] environment ready in $VENV"

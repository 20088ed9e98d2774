#!/usr/bin/env bash
# Build (once) and install Horovod 0.28.1 with PyTorch + Gloo into the active venv.
#
# Why a script: Horovod 0.28.1 is the last release and its sdist pins
# CMAKE_CXX_STANDARD 14, but torch>=2.1 headers need C++17. We patch the two
# CMakeLists.txt files, build a wheel with Gloo only (no MPI/TF/MXNet), and
# cache the wheel OUTSIDE the clone, keyed by horovod/torch/python versions,
# so later runs (CI included) install it in seconds.
# Never install horovod[spark]: it pins pyarrow<11, which breaks the stack.
set -euo pipefail
PY=${PYTHON:-python}
HVD_VERSION=0.28.1
TORCH_VERSION=$($PY -c 'import torch; print(torch.__version__.split("+")[0])')
PY_TAG=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
CACHE_ROOT=${YTSPARK_CACHE:-$HOME/.cache/ytspark}
CACHE="$CACHE_ROOT/wheels/horovod-$HVD_VERSION-torch$TORCH_VERSION-$PY_TAG"

if $PY -c "import horovod.torch" 2>/dev/null; then
  echo "[horovod] already installed"; exit 0
fi
whl=$(ls "$CACHE"/horovod-*.whl 2>/dev/null | head -1 || true)
if [ -z "$whl" ]; then
  echo "[horovod] no cached wheel at $CACHE; building from sdist (about 5 minutes)"
  $PY -m pip install -q wheel setuptools packaging psutil cloudpickle pyyaml cffi cmake
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PY -m pip download -q --no-deps --no-binary :all: -d "$work" "horovod==$HVD_VERSION"
  tar -xzf "$work"/horovod-$HVD_VERSION.tar.gz -C "$work"
  src="$work/horovod-$HVD_VERSION"
  # The C++17 patch: torch>=2.1 headers do not compile as C++14.
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
      "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
  mkdir -p "$CACHE"
  CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS=-j2 \
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_CPU_OPERATIONS=gloo \
  HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    $PY -m pip wheel --no-build-isolation --no-deps -w "$work/dist" "$src"
  cp "$work"/dist/horovod-*.whl "$CACHE/"
  whl=$(ls "$CACHE"/horovod-*.whl | head -1)
fi
echo "[horovod] installing $whl"
$PY -m pip install -q --no-deps "$whl"
$PY -m pip install -q psutil cloudpickle pyyaml cffi packaging
$PY -c "import horovod.torch as hvd; print('[horovod] ok', hvd.__version__ if hasattr(hvd,'__version__') else '')"

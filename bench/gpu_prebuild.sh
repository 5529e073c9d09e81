#!/usr/bin/env bash
# Builds fastemb._C and fastemb._C_cuda for the GPU machine's Python (3.12 on the H100/H200 image) and
# CUDA architecture (90) on a machine without a GPU, into .devcarry/, so that the device run spends
# no device time on the build and does not depend on the CMake version there. The GPU check command
# (BENCHMARKS.md "GPU check") copies them next to the package and falls back to --build when they do
# not import there.
#
#   bash bench/gpu_prebuild.sh [python3.12] [arch]
#
# Needs nvcc 13 and a Python of the device's minor version (pyenv's 3.12 here); the build dir
# build/gpu-prebuild is reused, so a rebuild after an edit takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
# A Python that really runs (a pyenv shim named python3.12 exists but fails when 3.12 is not selected).
PY=${1:-}
if [ -z "$PY" ]; then
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python; do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then PY=$c; break; fi
  done
  [ -n "$PY" ] || { echo "gpu_prebuild: no working Python 3.12 found; pass its path as the first argument" >&2; exit 1; }
fi
ARCH=${2:-90}
VENV="$PWD/build/gpu-prebuild-venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q pybind11 "cmake>=3.31.10,<4" ninja
fi
"$VENV/bin/cmake" -S . -B build/gpu-prebuild -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_MAKE_PROGRAM="$VENV/bin/ninja" -DPython_EXECUTABLE="$VENV/bin/python" \
  -Dpybind11_DIR="$("$VENV/bin/python" -m pybind11 --cmakedir)" -DFASTEMB_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DSKBUILD_PROJECT_VERSION=0.1.0 > /dev/null
"$VENV/bin/ninja" -C build/gpu-prebuild
mkdir -p .devcarry
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
cp build/gpu-prebuild/_C.cpython-*.so build/gpu-prebuild/_C_cuda.cpython-*.so .devcarry/
ls -l .devcarry/

#!/usr/bin/env bash
# Installs NVIDIA's NVRTC and ptxas from their PyPI wheels into target/cuda-tools (no
# CUDA toolkit, no GPU needed), once: a second run finds them and does nothing.
# Prints the two folders the CUDA compile check needs, as shell assignments:
#   NVRTC_LIB=...   (holds libnvrtc.so.12; put it on LD_LIBRARY_PATH)
#   PTXAS=...       (the ptxas binary)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION=12.9.86
DEST="target/cuda-tools/$VERSION"
NVRTC_LIB="$DEST/nvidia/cuda_nvrtc/lib"
PTXAS="$DEST/nvidia/cuda_nvcc/bin/ptxas"

if [ ! -e "$NVRTC_LIB/libnvrtc.so.12" ] || [ ! -x "$PTXAS" ]; then
    mkdir -p "$DEST"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST" \
        "nvidia-cuda-nvrtc-cu12==$VERSION" "nvidia-cuda-nvcc-cu12==$VERSION" >&2
fi
[ -e "$NVRTC_LIB/libnvrtc.so.12" ] || { echo "libnvrtc.so.12 missing under $DEST" >&2; exit 1; }
[ -x "$PTXAS" ] || { echo "ptxas missing under $DEST" >&2; exit 1; }
echo "NVRTC_LIB=$(pwd)/$NVRTC_LIB"
echo "PTXAS=$(pwd)/$PTXAS"

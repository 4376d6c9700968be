#!/usr/bin/env bash
# The CUDA checks that need no GPU:
# 1. the .cu kernels on emulated CUDA threads against the scalar oracle
#    (crates/adpq-cuda/tests/emulated.rs; needs g++ >= 11, installed here if missing);
# 2. NVRTC and ptxas from NVIDIA's PyPI wheels (scripts/cuda-tools.sh, cached under
#    target/), then every kernel through the crate's own NVRTC path for sm_80 and sm_90
#    and each PTX through ptxas (crates/adpq-cuda/tests/nvrtc.rs).
# Fails if any kernel disagrees with the oracle, or does not compile or assemble.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v g++ >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
ADPQ_REQUIRE_EMULATION=1 cargo test -p adpq-cuda --test emulated --test emulated_missing

eval "$(bash scripts/cuda-tools.sh)"
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ADPQ_PTXAS="$PTXAS"
# The no-NVRTC error path is tested by the ordinary suite, where libnvrtc is absent.
cargo test -p adpq-cuda --test nvrtc -- --include-ignored --skip without_nvrtc --nocapture

#!/usr/bin/env bash
# The CUDA compile check, without a GPU: NVRTC and ptxas from NVIDIA's PyPI wheels
# (scripts/cuda-tools.sh, cached under target/), then every kernel through the crate's
# own NVRTC path for sm_80 and sm_90 and each PTX through ptxas
# (crates/adpq-cuda/tests/nvrtc.rs). Fails if any kernel does not compile or assemble.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(bash scripts/cuda-tools.sh)"
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ADPQ_PTXAS="$PTXAS"
# The no-NVRTC error path is tested by the ordinary suite, where libnvrtc is absent.
cargo test -p adpq-cuda --test nvrtc -- --include-ignored --skip without_nvrtc --nocapture

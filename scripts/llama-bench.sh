#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` and `llama-quantize` (CPU backend, native SIMD) as
# the decode-speed peer of `adpq generate` (`cargo xtask bench --decode`), and requantize
# SmolLM2's GGUF (from `cargo xtask fetch`) to the types the bench compares against.
#
# usage: scripts/llama-bench.sh [CACHE_DIR]      (default: <repo root>/target/llama-bench)
#
# Produces CACHE_DIR/bin/{llama-bench,llama-quantize} (they need
# LD_LIBRARY_PATH=CACHE_DIR/bin) and CACHE_DIR/models/smollm2-{Q4_0,Q4_K_M}.gguf.
# CACHE_DIR/bin is a link to the build folder of the current configuration:
# build-native, or build-native-noamx where the CPU advertises AMX. There -march=native
# would compile ggml's AMX matrix multiply, which dies with SIGILL (in
# ggml_backend_amx_mul_mat, on the first prompt) where the kernel or hypervisor does not
# grant the process the AMX tile state; -mno-amx-* keeps every other native extension
# (AVX-512, VNNI, ...) and with them llama.cpp's repacked AVX-512 GEMM, so llama.cpp is
# measured at its best that runs here. The folder's .flags records the cmake arguments; a
# different configuration builds into its own folder.
# The sources are the pinned llama-cpp-python source package that scripts/llama-peer.sh
# downloads (it runs first, and checks the package's SHA-256). Idempotent: a finished
# build and the requantized models are kept. Needs cmake and g++ (installed with apt-get
# when missing). About 5 minutes on 2 cores the first time.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${1:-$ROOT/target/llama-bench}"
PEER="$ROOT/target/llama-peer"
SDIST="llama_cpp_python-0.3.36.tar.gz"
GGUF="$ROOT/target/data/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
TYPES=(Q4_0 Q4_K_M)

die() { echo "llama-bench.sh: error: $*" >&2; exit 1; }
step() { echo "==> [+$((SECONDS - START))s] $*"; }
trap 'echo "llama-bench.sh: error: command failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
START=$SECONDS

[ -f "$GGUF" ] || die "$GGUF is missing (run cargo xtask fetch)"
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  step "apt-get install cmake g++"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends cmake g++ >/dev/null
fi
# The pinned, checksummed source package.
bash "$HERE/llama-peer.sh" "$PEER" >/dev/null
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
SRC="$CACHE/src"
if [ ! -f "$SRC/.complete" ]; then
  step "unpack llama.cpp from $SDIST"
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  tar -xzf "$PEER/sdist/$SDIST" -C "$SRC.tmp" --strip-components=3 \
    llama_cpp_python-0.3.36/vendor/llama.cpp
  touch "$SRC.tmp/.complete"
  mv "$SRC.tmp" "$SRC"
fi
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
TAG=native
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  CMAKE_ARGS+=("-DCMAKE_C_FLAGS=$NOAMX" "-DCMAKE_CXX_FLAGS=$NOAMX")
  TAG=native-noamx
fi
BUILD="$CACHE/build-$TAG"
BIN="$BUILD/bin"
if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-quantize" ] ||
  [ "$(cat "$BUILD/.flags" 2>/dev/null)" != "${CMAKE_ARGS[*]}" ]; then
  step "cmake build llama-bench llama-quantize ($TAG: ${CMAKE_ARGS[*]})"
  rm -f "$BUILD/.flags"
  cmake -S "$SRC" -B "$BUILD" "${CMAKE_ARGS[@]}" >/dev/null
  cmake --build "$BUILD" --target llama-bench llama-quantize -j "$(nproc)" >/dev/null
  echo "${CMAKE_ARGS[*]}" >"$BUILD/.flags"
fi
ln -sfn "build-$TAG/bin" "$CACHE/bin"
BIN="$CACHE/bin"
mkdir -p "$CACHE/models"
for t in "${TYPES[@]}"; do
  out="$CACHE/models/smollm2-$t.gguf"
  if [ ! -f "$out" ]; then
    step "llama-quantize SmolLM2 to $t"
    LD_LIBRARY_PATH="$BIN" "$BIN/llama-quantize" --allow-requantize "$GGUF" "$out.tmp" "$t" 1 \
      >/dev/null 2>&1 || die "llama-quantize to $t failed"
    mv "$out.tmp" "$out"
  fi
done
step "ready: $BIN/llama-bench, models in $CACHE/models"

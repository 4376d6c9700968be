#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` and `llama-quantize` (CPU backend, native SIMD) as
# the decode-speed peer of `adpq generate` (`cargo xtask bench --decode`), and requantize
# SmolLM2's GGUF (from `cargo xtask fetch`) to the types the bench compares against.
#
# usage: scripts/llama-bench.sh [CACHE_DIR]      (default: <repo root>/target/llama-bench)
#
# Produces CACHE_DIR/bin/{llama-bench,llama-quantize} (they need
# LD_LIBRARY_PATH=CACHE_DIR/bin), CACHE_DIR/bin-prompt/llama-bench (the same, for prompt
# processing) and CACHE_DIR/models/smollm2-{Q4_0,Q4_K_M}.gguf.
# CACHE_DIR/bin links to CACHE_DIR/build/bin, the GGML_NATIVE build, used for decode (tg)
# and requantizing. CACHE_DIR/bin-prompt links there too when that build processes a prompt;
# on a CPU that advertises AMX without the kernel or hypervisor granting the process the
# tile state (as here), -march=native compiles ggml's AMX matrix multiply, whose tile
# instructions die with SIGILL on the first prompt (ggml_backend_amx_mul_mat; a
# single-token product takes its VNNI path, no tiles, so decode runs, and is faster there
# than without it: Q4_0 tg64 about 1.8x on one thread). Then a second build,
# CACHE_DIR/build-noamx (GGML_NATIVE plus -mno-amx-tile -mno-amx-int8 -mno-amx-bf16: every
# other native extension, AVX-512 and VNNI included, and with them llama.cpp's repacked
# GEMM), is bin-prompt's. So each figure is llama.cpp's best build that runs here. Each
# build folder's .flags records its cmake arguments; other arguments rebuild it.
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
# build FOLDER EXTRA_CMAKE_ARGS...: llama-bench and llama-quantize into CACHE/FOLDER.
build() {
  local dir="$CACHE/$1" args=("${CMAKE_ARGS[@]}" "${@:2}")
  if [ ! -x "$dir/bin/llama-bench" ] || [ ! -x "$dir/bin/llama-quantize" ] ||
    [ "$(cat "$dir/.flags" 2>/dev/null)" != "${args[*]}" ]; then
    step "cmake build llama-bench llama-quantize into $1 (${args[*]})"
    rm -f "$dir/.flags"
    # A folder configured elsewhere (moved) cannot be reconfigured in place.
    if [ -f "$dir/CMakeCache.txt" ] &&
      ! grep -qxF "CMAKE_CACHEFILE_DIR:INTERNAL=$dir" "$dir/CMakeCache.txt"; then
      rm -rf "$dir"
    fi
    cmake -S "$SRC" -B "$dir" "${args[@]}" >/dev/null
    cmake --build "$dir" --target llama-bench llama-quantize -j "$(nproc)" >/dev/null
    echo "${args[*]}" >"$dir/.flags"
  fi
}
build build
ln -sfn build/bin "$CACHE/bin"
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
# Does the native build process a prompt? (A few seconds; see the header for AMX. The
# subshell, which waits for llama-bench, keeps bash's "Illegal instruction" notice out of
# the output.)
if (LD_LIBRARY_PATH="$BIN" "$BIN/llama-bench" -m "$CACHE/models/smollm2-Q4_0.gguf" \
  -p 32 -n 0 -r 1 -t 1; exit $?) >/dev/null 2>&1; then
  ln -sfn build/bin "$CACHE/bin-prompt"
elif grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  build build-noamx "-DCMAKE_C_FLAGS=$NOAMX" "-DCMAKE_CXX_FLAGS=$NOAMX"
  ln -sfn build-noamx/bin "$CACHE/bin-prompt"
  LD_LIBRARY_PATH="$CACHE/bin-prompt" "$CACHE/bin-prompt/llama-bench" \
    -m "$CACHE/models/smollm2-Q4_0.gguf" -p 32 -n 0 -r 1 -t 1 >/dev/null 2>&1 ||
    die "neither build of llama-bench processes a prompt"
else
  die "llama-bench (native build) fails on a prompt: $BIN/llama-bench -p 32 -n 0"
fi
step "ready: $BIN/llama-bench (prompts: $CACHE/bin-prompt/llama-bench), models in $CACHE/models"

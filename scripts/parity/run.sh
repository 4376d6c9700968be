#!/usr/bin/env bash
# Generate (or check) the AdpQ parity vectors with the Python reference
# implementation auto-adpq 0.3.5.
#
#   scripts/parity/run.sh [OUT_DIR]     regenerate into OUT_DIR
#                                       (default: crates/adpq-core/tests/data/parity)
#   scripts/parity/run.sh --check       regenerate into a temp dir and diff against
#                                       the committed vectors; non-zero exit on any
#                                       difference.  Also re-verifies lambda' with the
#                                       pure-Python replica (brent_replica.py).
#
# Environment: python3 (3.11) with pip; packages come from the package registry
# configured for pip.  Installs into target/parity-venv (a venv), or, if the venv
# module is unavailable (Debian without python3-venv), into target/parity-pylib
# via `pip install --target`.  Override the interpreter with PYTHON=...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA_DIR="$ROOT/crates/adpq-core/tests/data/parity"
REQ="$HERE/requirements.txt"
PYTHON="${PYTHON:-python3}"

CHECK=0
OUT="$DATA_DIR"
for arg in "$@"; do
  case "$arg" in
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) OUT="$arg" ;;
  esac
done

req_hash() { "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$REQ"; }
HASH="$(req_hash)"

VENV="$ROOT/target/parity-venv"
PYLIB="$ROOT/target/parity-pylib"
PY=""
EXTRA_PATH=""

if [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
  PY="$VENV/bin/python"
  if [ "$(cat "$VENV/.adpq-parity-stamp" 2>/dev/null)" != "$HASH" ]; then
    echo "installing pinned reference deps into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -r "$REQ"
    echo "$HASH" > "$VENV/.adpq-parity-stamp"
  fi
else
  rm -rf "$VENV"  # half-created venv (no ensurepip)
  PY="$PYTHON"
  EXTRA_PATH="$PYLIB"
  if [ "$(cat "$PYLIB/.adpq-parity-stamp" 2>/dev/null)" != "$HASH" ]; then
    echo "venv unavailable; installing pinned reference deps into $PYLIB" >&2
    rm -rf "$PYLIB"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$PYLIB" -r "$REQ"
    echo "$HASH" > "$PYLIB/.adpq-parity-stamp"
  fi
fi

gen() {
  PYTHONPATH="$HERE/torch_stub${EXTRA_PATH:+:$EXTRA_PATH}" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -s "$HERE/gen_vectors.py" "$1"
}

if [ "$CHECK" = 0 ]; then
  gen "$OUT"
  exit 0
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
gen "$TMP" >/dev/null
status=0
if ! diff -r -q "$DATA_DIR" "$TMP" >/dev/null; then
  echo "parity vectors differ from a fresh regeneration:" >&2
  diff -r -q "$DATA_DIR" "$TMP" >&2 || true
  for f in "$TMP"/*.json; do
    b="$(basename "$f")"
    [ -f "$DATA_DIR/$b" ] && diff -u "$DATA_DIR/$b" "$f" | cut -c1-200 | head -40 >&2 || true
  done
  status=1
fi
"$PY" -s "$HERE/brent_replica.py" "$DATA_DIR" || status=1
[ "$status" = 0 ] && echo "parity vectors up to date" >&2
exit "$status"

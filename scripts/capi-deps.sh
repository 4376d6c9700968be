#!/usr/bin/env bash
# Tools the C ABI's tests use (crates/adpq-capi/tests): a C++ compiler for the C++17
# smoke test, pkg-config for adpq.pc, and the C compiler's AddressSanitizer/UBSan
# runtimes (part of Debian's gcc). Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkgconf)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "capi-deps: cc, c++ and pkg-config present"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "capi-deps: installed ${missing[*]}"

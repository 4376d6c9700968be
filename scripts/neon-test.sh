#!/usr/bin/env bash
# Cross-compiles adpq-core for aarch64-unknown-linux-gnu and runs its tests (unit,
# property, conformance: NEON against the scalar oracle) under qemu-user.
#
# Installs what is missing from Debian's mirror (about 35 s and 260 MB on a fresh
# machine): the arm64 standard library of Debian's Rust (rustc-web, 1.96, in /usr/bin),
# the aarch64 cross linker and libc, and qemu-user. rustup's toolchain stays first on
# PATH; this script calls /usr/bin/cargo with RUSTC=/usr/bin/rustc explicitly.
#
# Usage: scripts/neon-test.sh [extra cargo test args...]
# Env:   NEON_TARGET_DIR (default target/aarch64-cross)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have() {
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && command -v aarch64-linux-gnu-gcc >/dev/null &&
        command -v qemu-aarch64 >/dev/null &&
        [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu/lib" ]
}

if ! have; then
    echo "neon-test: installing the aarch64 cross toolchain and qemu-user" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends rustc-web cargo-web \
        libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
    have || { echo "neon-test: toolchain still incomplete after apt-get" >&2; exit 1; }
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# No "-L ..." / QEMU_LD_PREFIX: with it qemu hangs (recipes.md); the arm64 loader comes with
# the multiarch libc that libstd-rust-web-dev:arm64 pulls in.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=${NEON_TARGET_DIR:-$root/target/aarch64-cross}
# Fewer proptest cases under emulation (qemu runs ~10-30x slower); the x86_64 run has the full count.
export PROPTEST_CASES=${PROPTEST_CASES:-48}

cd "$root"
start=$(date +%s)
/usr/bin/cargo test -p adpq-core --target aarch64-unknown-linux-gnu "$@"
echo "neon-test: passed in $(( $(date +%s) - start )) s (build + tests under qemu-aarch64)" >&2

#!/usr/bin/env bash
# Installs Debian's Rust toolchain (rustc-web, cargo-web) and its standard library source
# (rust-web-src) into /usr/bin and /usr/lib/rustlib/src, for `-Z build-std=core` builds of
# adpq-core for bare-metal targets (thumbv7em-none-eabihf). rustup's dist server is not
# reachable on CI, so `rustup component add rust-src` is not an option; Debian's mirror is.
#
# Idempotent: does nothing when /usr/bin/rustc, /usr/bin/cargo and the core library source
# are already there. rustup's toolchains stay first on PATH; callers use /usr/bin/cargo
# with RUSTC=/usr/bin/rustc explicitly.
set -euo pipefail

src_ok() {
    local sysroot
    sysroot=$(/usr/bin/rustc --print sysroot 2>/dev/null) || return 1
    [ -f "$sysroot/lib/rustlib/src/rust/library/core/src/lib.rs" ]
}

if [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && src_ok; then
    echo "install-debian-rust: already installed ($(/usr/bin/rustc --version))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends rustc-web cargo-web rust-web-src >/dev/null

if ! src_ok; then
    echo "install-debian-rust: rust-web-src installed but core's source not found under $(/usr/bin/rustc --print sysroot)/lib/rustlib/src" >&2
    exit 1
fi
echo "install-debian-rust: installed $(/usr/bin/rustc --version)"

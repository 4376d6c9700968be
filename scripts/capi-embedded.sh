#!/usr/bin/env bash
# Builds the C library (crates/adpq-capi) as a static library for a bare-metal target
# (default thumbv7em-none-eabihf: no std, no allocator) and measures a minimal link
# that only parses, dequantizes and runs gemv: the figure in the README's "Link from C".
#
#   scripts/capi-embedded.sh [TARGET]
#
# -Z build-std needs the core library's source: Debian's rustc-web + rust-web-src
# (scripts/install-debian-rust.sh, as `cargo xtask nostd` does). The link uses rustup's
# rust-lld with --gc-sections, rooted at adpq_tensor_parse, adpq_dequantize_rows and
# adpq_gemv, the way firmware linking the .a keeps only what it calls; the size is read
# with llvm-size (Debian's llvm package, installed when missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET="${1:-thumbv7em-none-eabihf}"
OUT=target/capi-embedded

bash scripts/install-debian-rust.sh
if ! command -v llvm-size >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq --no-install-recommends llvm >/dev/null
fi

# opt-level "s": what a size-conscious firmware build uses; compiler-builtins-mem gives
# memcpy/memset (weak symbols) so the link below is complete and counts them.
env -u CARGO -u RUSTUP_TOOLCHAIN RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_PANIC=abort \
    /usr/bin/cargo build -Z build-std=core -Z build-std-features=compiler-builtins-mem \
    --release -p adpq-capi --no-default-features --target "$TARGET" --target-dir "$OUT"

LIB="$OUT/$TARGET/release/libadpq_capi.a"
LLD="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
ELF="$OUT/$TARGET/minimal.elf"
"$LLD" -flavor gnu --gc-sections --entry=adpq_tensor_parse \
    --undefined=adpq_dequantize_rows --undefined=adpq_gemv -o "$ELF" "$LIB"
# The link must hold no allocator, no std and no unwinding machinery (panic = "abort":
# a panic ends in the library's non-returning #[panic_handler], nothing can unwind into
# the C caller).
if llvm-nm "$ELF" | grep -E '__rust_alloc|__rdl_alloc|3std|_Unwind_|eh_personality' >/dev/null; then
    echo "capi-embedded: the minimal link pulls an allocator, std or unwinding" >&2
    llvm-nm "$ELF" | grep -E '__rust_alloc|__rdl_alloc|3std|_Unwind_|eh_personality' >&2
    exit 1
fi
echo "capi-embedded: $TARGET static library $(du -k "$LIB" | cut -f1) KiB (before linking)"
echo "capi-embedded: minimal link (parse + dequantize + gemv), text/data/bss in bytes:"
llvm-size "$ELF"

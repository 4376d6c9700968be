//! `cargo xtask nostd [--host-only] [--target TRIPLE]...`: proves that adpq-core is
//! `no_std` and needs no allocator.
//!
//! 1. Host: builds and runs `crates/nostd-check`, a `#![no_std] #![no_main]` binary that
//!    links adpq-core without its `std` feature, quantizes small tensors into fixed-size
//!    buffers, parses and dequantizes them and exits 0 only when the results check out.
//!    A dependency that pulls std makes the link fail (duplicate `panic_impl`).
//! 2. Bare metal: builds adpq-core for `thumbv7em-none-eabihf` (or each `--target`) with
//!    `-Z build-std=core`, where std does not exist at all. That needs the standard
//!    library's source. The rustup nightly's `rust-src` is used when installed; otherwise
//!    (rustup's dist server is not reachable on CI) Debian's `rustc-web cargo-web
//!    rust-web-src`, installed by `scripts/install-debian-rust.sh`, with
//!    `RUSTC_BOOTSTRAP=1`.
//!
//! Both builds use the nostd-check crate's own workspace (and lock file), so only the
//! core's dependency graph is resolved, and write to `target/nostd/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{project_root, DynResult};

const DEFAULT_TARGET: &str = "thumbv7em-none-eabihf";

/// Entry point.
pub fn run(args: &[String]) -> DynResult {
    let mut host_only = false;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-only" => host_only = true,
            "--target" => targets.push(it.next().ok_or("--target needs a triple")?.clone()),
            other => {
                return Err(format!(
                    "unexpected argument `{other}`; usage: cargo xtask nostd [--host-only] [--target TRIPLE]..."
                )
                .into())
            }
        }
    }
    if targets.is_empty() {
        targets.push(DEFAULT_TARGET.to_string());
    }

    let root = project_root();
    let manifest = root.join("crates/nostd-check/Cargo.toml");
    let target_dir = target_base(&root).join("nostd");

    let start = Instant::now();
    eprintln!("xtask nostd: host #![no_std] binary (crates/nostd-check)");
    crate::run_checked(
        crate::cargo()
            .args(["run", "--release", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir.join("host")),
    )
    .map_err(|e| {
        format!(
            "{e}\n(a duplicate `panic_impl` lang item means something in adpq-core's \
             dependency graph links std)"
        )
    })?;
    eprintln!("xtask nostd: host check passed in {:.0?}", start.elapsed());
    if host_only {
        return Ok(());
    }

    let toolchain = build_std_toolchain(&root)?;
    for target in &targets {
        let start = Instant::now();
        eprintln!(
            "xtask nostd: adpq-core for {target} with -Z build-std=core ({})",
            toolchain.describe()
        );
        let mut cmd = toolchain.cargo();
        cmd.current_dir(&root)
            .args([
                "build",
                "-Z",
                "build-std=core",
                "--release",
                "-p",
                "adpq-core",
                "--manifest-path",
            ])
            .arg(&manifest)
            .args(["--target", target])
            .arg("--target-dir")
            .arg(target_dir.join("build-std"));
        crate::run_checked(&mut cmd)?;
        eprintln!("xtask nostd: {target} built in {:.0?}", start.elapsed());
    }
    Ok(())
}

/// `$CARGO_TARGET_DIR`, or `target/` under the root.
fn target_base(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

/// A toolchain that can build `core` from source.
enum BuildStd {
    /// rustup's nightly with the `rust-src` component.
    RustupNightly,
    /// Debian's rustc-web in /usr/bin with rust-web-src, unlocked by `RUSTC_BOOTSTRAP=1`.
    Debian,
}

impl BuildStd {
    fn describe(&self) -> &'static str {
        match self {
            BuildStd::RustupNightly => "rustup nightly + rust-src",
            BuildStd::Debian => "Debian rustc-web + rust-web-src",
        }
    }

    fn cargo(&self) -> Command {
        match self {
            BuildStd::RustupNightly => {
                let mut c = Command::new("cargo");
                c.env_remove("CARGO")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("RUSTC")
                    .arg("+nightly");
                c
            }
            BuildStd::Debian => {
                let mut c = Command::new("/usr/bin/cargo");
                c.env_remove("CARGO")
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1");
                c
            }
        }
    }
}

/// Picks the rustup nightly when it has `rust-src`, else installs (if needed) and uses
/// Debian's toolchain.
fn build_std_toolchain(root: &Path) -> DynResult<BuildStd> {
    if has_core_source(
        Command::new("rustc")
            .env_remove("RUSTUP_TOOLCHAIN")
            .arg("+nightly"),
    ) {
        return Ok(BuildStd::RustupNightly);
    }
    let start = Instant::now();
    crate::run_checked(Command::new("bash").arg(root.join("scripts/install-debian-rust.sh")))?;
    if !has_core_source(&mut Command::new("/usr/bin/rustc")) {
        return Err(
            "no toolchain with the core library's source: neither rustup nightly's \
                    rust-src nor Debian's rust-web-src"
                .into(),
        );
    }
    eprintln!(
        "xtask nostd: Debian toolchain ready in {:.0?}",
        start.elapsed()
    );
    Ok(BuildStd::Debian)
}

/// Whether `rustc --print sysroot` of this command has `core`'s source under it.
fn has_core_source(rustc: &mut Command) -> bool {
    let Ok(out) = rustc
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/src/lib.rs")
        .is_file()
}

//! Builds the kernel-side programs (crate `tracer-ebpf`) for
//! `bpfel-unknown-none` and copies the object to `$OUT_DIR/tracer-ebpf`, for
//! `aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"))`.
//!
//! The BPF target needs a `core` built for it. Two routes (see
//! docs/building.md), picked by xtask/src/ebpf_toolchain.rs:
//! - aya's usual one, when rustup has a nightly with the rust-src component:
//!   aya-build runs that nightly's cargo with `-Z build-std=core`;
//! - otherwise Debian's rustc-web (`/usr/bin/rustc`, with a prebuilt `core`
//!   for the BPF target from `libstd-rust-web-dev-bpf`), which `cargo xtask
//!   setup` installs.
//!
//! `MMTRACE_EBPF_TOOLCHAIN=debian|nightly|nightly-YYYY-MM-DD` forces one.
//! Both link with `bpf-linker`.
//!
//! On the Debian route the nested cargo uses its own target directory
//! (`<build dir>/bpf`), so it never waits for a lock the outer cargo holds,
//! and is shared by every profile and by `cargo clippy`, so the eBPF crate
//! is built once.

// A build script reports what is wrong by panicking: cargo shows the message.
#![allow(clippy::expect_used, clippy::manual_assert)]

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

#[path = "../xtask/src/ebpf_toolchain.rs"]
mod ebpf_toolchain;

use ebpf_toolchain::{Route, BPF_TARGET, DEBIAN_RUSTC, TOOLCHAIN_VAR};

const PACKAGE: &str = "tracer-ebpf";
const MISSING: &str = "eBPF toolchain missing: run `cargo xtask setup` (see docs/building.md)";
const MISSING_NIGHTLY: &str =
    "bpf-linker missing: `cargo install bpf-linker`, built for the LLVM of rustup's nightly \
     (see docs/building.md)";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for path in [
        "tracer-ebpf/src",
        "tracer-ebpf/Cargo.toml",
        "tracer-common/src",
        "tracer-common/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        let path = workspace.join(path);
        // A missing path would make cargo rerun this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_VAR}");

    let choice = ebpf_toolchain::choose().unwrap_or_else(|e| panic!("{e}"));
    if let Some(note) = &choice.note {
        println!("cargo:warning={note}");
    }
    // Adding or removing the nightly's rust-src changes the route.
    if let Some(components) = choice.nightly_components.filter(|path| path.is_file()) {
        println!("cargo:rerun-if-changed={}", components.display());
    }
    let linker = find_bpf_linker();
    match choice.route {
        Route::Debian => {
            let linker = require(ebpf_toolchain::debian_missing(), linker, MISSING);
            build_debian(&workspace, &out_dir, &linker);
        }
        Route::Nightly(toolchain) => {
            let linker = require(Vec::new(), linker, MISSING_NIGHTLY);
            build_nightly(&workspace, &toolchain, &linker);
        }
    }
}

/// The linker, or a panic that names everything missing.
fn require(mut missing: Vec<String>, linker: Option<PathBuf>, advice: &str) -> PathBuf {
    if linker.is_none() {
        missing.push("bpf-linker (in PATH or $CARGO_HOME/bin)".to_string());
    }
    match linker {
        Some(linker) if missing.is_empty() => {
            // A reinstalled linker must rebuild the object.
            println!("cargo:rerun-if-changed={}", linker.display());
            linker
        }
        _ => {
            eprintln!("not found: {}", missing.join(", "));
            panic!("{advice}");
        }
    }
}

/// aya's usual route: aya-build runs `rustup run TOOLCHAIN cargo build -Z
/// build-std=core` for the eBPF crate and copies the object to OUT_DIR.
fn build_nightly(workspace: &Path, toolchain: &str, linker: &Path) {
    // The BPF targets link with `bpf-linker` from PATH by default; name the
    // one found, which may be only in $CARGO_HOME/bin. The nested cargo
    // inherits this process's environment.
    let linker_var = "CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER";
    if env::var_os(linker_var).is_none() {
        env::set_var(linker_var, linker);
    }
    let root_dir = workspace.join(PACKAGE);
    let package = aya_build::Package {
        name: PACKAGE,
        root_dir: root_dir.to_str().expect("workspace path is UTF-8"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(toolchain)).unwrap_or_else(|e| {
        panic!("building {PACKAGE} with rustup's {toolchain} (aya-build) failed: {e:#}")
    });
}

/// Debian's rustc-web, which has a prebuilt `core` for the BPF target.
fn build_debian(workspace: &Path, out_dir: &Path, linker: &Path) {
    // A reinstalled compiler must rebuild the object.
    println!("cargo:rerun-if-changed={DEBIAN_RUSTC}");

    // The programs read the registers of the architecture they run on (the
    // one tracer is built for), like aya-build does.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "--check-cfg=cfg(bpf_target_arch,values(any()))".to_string(),
        "-Cdebuginfo=2".to_string(),
        "-Clink-arg=--btf".to_string(),
    ]
    .join("\x1f");

    let target_dir = bpf_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            BPF_TARGET,
            "--package",
            PACKAGE,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Nothing of the outer build may leak in: its wrappers (cargo clippy sets
    // RUSTC_WORKSPACE_WRAPPER), flags, target, target dir, and the variables
    // cargo sets for this build script.
    for (key, _) in env::vars_os() {
        if must_remove(&key) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", linker)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::null());

    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Cargo shows a build script's stderr when it fails (and with -vv).
    eprintln!("{stderr}");
    if !output.status.success() {
        panic!(
            "building {PACKAGE} for {BPF_TARGET} failed ({}); its cargo output is above",
            output.status
        );
    }
    // Show the eBPF crate's warnings in the outer build.
    for line in stderr.lines() {
        let line = line.trim_end();
        if line.starts_with("warning") || line.trim_start().starts_with("--> ") {
            println!("cargo:warning={PACKAGE}: {line}");
        }
    }

    let object = target_dir.join(BPF_TARGET).join("release").join(PACKAGE);
    let dest = out_dir.join(PACKAGE);
    fs::copy(&object, &dest).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {}: {e}",
            object.display(),
            dest.display()
        )
    });
}

/// bpf-linker's path, resolved so that its reinstallation is seen.
fn find_bpf_linker() -> Option<PathBuf> {
    let path = ebpf_toolchain::find_bpf_linker()?;
    Some(fs::canonicalize(&path).unwrap_or(path))
}

/// `<build dir>/bpf`: the nearest ancestor of OUT_DIR that cargo tagged with
/// CACHEDIR.TAG is the outer build directory (normally `<workspace>/target`).
fn bpf_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| out_dir.join("bpf-target"), |dir| dir.join("bpf"))
}

fn must_remove(key: &OsString) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    const EXACT: &[&str] = &[
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_BUILD_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_TARGET_BPFEL_UNKNOWN_NONE_",
        "DEP_",
        "__CARGO",
    ];
    EXACT.contains(&key) || PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

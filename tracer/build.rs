//! Builds the kernel-side programs (crate `tracer-ebpf`) for
//! `bpfel-unknown-none` and copies the object to `$OUT_DIR/tracer-ebpf`, for
//! `aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"))`.
//!
//! The BPF target needs a prebuilt `core`. rustup's nightly + rust-src (what
//! aya-build expects) is not available on our machines, so this uses Debian's
//! rustc-web (`/usr/bin/rustc`, with `core` for the BPF target from
//! `libstd-rust-web-dev-bpf`) and `bpf-linker` built against the same LLVM.
//! `cargo xtask setup` installs both; see docs and xtask/src/setup.rs.
//!
//! The nested cargo uses its own target directory (`<build dir>/bpf`), so it
//! never waits for a lock the outer cargo holds, and is shared by every
//! profile and by `cargo clippy`, so the eBPF crate is built once.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

const RUSTC: &str = "/usr/bin/rustc";
const BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const BPF_TARGET: &str = "bpfel-unknown-none";
const PACKAGE: &str = "tracer-ebpf";
const MISSING: &str = "eBPF toolchain missing: run `cargo xtask setup` (see README)";
fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for path in [
        "tracer-ebpf/src",
        "tracer-ebpf/Cargo.toml",
        "tracer-ebpf/build.rs",
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

    let linker = check_toolchain();
    // A reinstalled compiler or linker must rebuild the object.
    println!("cargo:rerun-if-changed={RUSTC}");
    println!("cargo:rerun-if-changed={}", linker.display());

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

    let target_dir = bpf_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
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
    cmd.env("RUSTC", RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
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

/// Checks for /usr/bin/rustc, its BPF `core` and bpf-linker; returns the
/// linker's absolute path.
fn check_toolchain() -> PathBuf {
    let mut missing = Vec::new();
    if !Path::new(RUSTC).is_file() {
        missing.push(format!("{RUSTC} (Debian package rustc-web)"));
    }
    let has_core = fs::read_dir(BPF_CORE_DIR).is_ok_and(|dir| {
        dir.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    });
    if !has_core {
        missing.push(format!(
            "{BPF_CORE_DIR}/libcore-*.rlib (Debian package libstd-rust-web-dev-bpf)"
        ));
    }
    let linker = find_bpf_linker();
    if linker.is_none() {
        missing.push("bpf-linker (in PATH or $CARGO_HOME/bin)".to_string());
    }
    if !missing.is_empty() {
        eprintln!("not found: {}", missing.join(", "));
        panic!("{MISSING}");
    }
    linker.unwrap()
}

fn find_bpf_linker() -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("bpf-linker"))
        .find(|path| path.is_file())
        .and_then(|path| fs::canonicalize(&path).ok().or(Some(path)))
}

/// `<build dir>/bpf`: the nearest ancestor of OUT_DIR that cargo tagged with
/// CACHEDIR.TAG is the outer build directory (normally `<workspace>/target`).
fn bpf_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|dir| dir.join("bpf"))
        .unwrap_or_else(|| out_dir.join("bpf-target"))
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

//! Which toolchain builds the eBPF crate, and where its parts are.
//!
//! Shared by `tracer/build.rs` (which builds the programs) and xtask (which
//! installs and checks the toolchain): both declare it as a module with
//! `#[path]`, so the two cannot disagree on a path or on the route. Only
//! `std` here.
//!
//! Two routes (docs/building.md tells why):
//! - nightly: aya's usual one, through `aya-build`: a rustup nightly with the
//!   `rust-src` component builds `core` for the BPF target itself;
//! - debian: Debian's `rustc-web` with the prebuilt BPF `core` of
//!   `libstd-rust-web-dev-bpf`, for machines where rust-src is unavailable.
//!
//! Both link with bpf-linker.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// `debian`, `nightly` (or a named rustup nightly such as
/// `nightly-2026-05-19`) forces a route; `auto` or unset picks one.
pub const TOOLCHAIN_VAR: &str = "MMTRACE_EBPF_TOOLCHAIN";
/// Debian's rustc-web.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Its prebuilt `core` for the BPF target (package libstd-rust-web-dev-bpf).
pub const DEBIAN_BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
/// The rustup toolchain the nightly route uses unless told otherwise.
pub const NIGHTLY: &str = "nightly";

/// What is missing for the debian route, each with its package.
pub fn debian_missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(DEBIAN_RUSTC).is_file() {
        missing.push(format!("{DEBIAN_RUSTC} (Debian package rustc-web)"));
    }
    if !has_debian_bpf_core() {
        missing.push(format!(
            "{DEBIAN_BPF_CORE_DIR}/libcore-*.rlib (Debian package libstd-rust-web-dev-bpf)"
        ));
    }
    missing
}

pub fn has_debian_bpf_core() -> bool {
    std::fs::read_dir(DEBIAN_BPF_CORE_DIR).is_ok_and(|dir| {
        dir.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

/// `$CARGO_HOME`, or `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// An executable in PATH, or else in `$CARGO_HOME/bin` (where `cargo
/// install` and rustup put theirs).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .chain(cargo_home().map(|home| home.join("bin")))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

pub fn find_bpf_linker() -> Option<PathBuf> {
    find_tool("bpf-linker")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Debian,
    /// aya-build with this rustup toolchain.
    Nightly(String),
}

/// The route to take, and a note to show when it is not the obvious one.
pub struct Choice {
    pub route: Route,
    pub note: Option<String>,
    /// rustup's list of the nightly's components, when there is a nightly:
    /// it changes when rust-src is added or removed. (Read by tracer/build.rs
    /// only.)
    #[allow(dead_code)]
    pub nightly_components: Option<PathBuf>,
}

/// The state of a rustup nightly toolchain.
pub enum Nightly {
    NoRustup,
    NotInstalled,
    /// Installed, but `core` cannot be built for the BPF target without it.
    NoRustSrc {
        sysroot: PathBuf,
    },
    Ready {
        sysroot: PathBuf,
    },
}

/// Looks at rustup's `toolchain` without installing anything.
pub fn nightly(toolchain: &str) -> Nightly {
    let Some(rustup) = find_tool("rustup") else {
        return Nightly::NoRustup;
    };
    // `rustup run` fails for a toolchain that is not installed (it installs
    // one only with --install).
    let Some(sysroot) = output(
        Command::new(&rustup)
            .args(["run", toolchain, "rustc", "--print", "sysroot"])
            .env("RUSTUP_AUTO_INSTALL", "0"),
    ) else {
        return Nightly::NotInstalled;
    };
    let sysroot = PathBuf::from(sysroot.trim());
    if rust_src(&sysroot).join("core").join("Cargo.toml").is_file() {
        Nightly::Ready { sysroot }
    } else {
        Nightly::NoRustSrc { sysroot }
    }
}

/// Where a toolchain's rust-src component puts the standard library.
pub fn rust_src(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib/src/rust/library")
}

/// Picks the route from MMTRACE_EBPF_TOOLCHAIN and what is installed:
/// unset, a rustup nightly with rust-src if there is one, else Debian's
/// rustc-web. Err when the variable asks for something that cannot work.
pub fn choose() -> Result<Choice, String> {
    let wanted = env::var(TOOLCHAIN_VAR).unwrap_or_default();
    let wanted = wanted.trim().to_string();
    let debian = |note| Choice {
        route: Route::Debian,
        note,
        nightly_components: None,
    };
    let toolchain = match wanted.as_str() {
        "debian" => return Ok(debian(None)),
        "" | "auto" => NIGHTLY,
        name if name.starts_with("nightly") => name,
        other => {
            return Err(format!(
                "{TOOLCHAIN_VAR}={other:?}: expected `debian`, `nightly`, a rustup nightly such \
                 as `nightly-2026-05-19`, or `auto`"
            ))
        }
    };
    let forced = toolchain == wanted;
    let components = |sysroot: &Path| Some(sysroot.join("lib/rustlib/components"));
    match nightly(toolchain) {
        Nightly::Ready { sysroot } => Ok(Choice {
            route: Route::Nightly(toolchain.to_string()),
            note: None,
            nightly_components: components(&sysroot),
        }),
        Nightly::NoRustSrc { sysroot } if !forced => Ok(Choice {
            nightly_components: components(&sysroot),
            ..debian(Some(format!(
                "rustup's {toolchain} has no rust-src component, so the eBPF programs are \
                 built with Debian's rustc-web. For aya's usual route: `rustup component add \
                 rust-src --toolchain {toolchain}`; to keep this one without this warning: \
                 {TOOLCHAIN_VAR}=debian"
            )))
        }),
        Nightly::NoRustup | Nightly::NotInstalled if !forced => Ok(debian(None)),
        Nightly::NoRustSrc { .. } => Err(format!(
            "{TOOLCHAIN_VAR}={toolchain}, but that toolchain has no rust-src component: \
             `rustup component add rust-src --toolchain {toolchain}`"
        )),
        Nightly::NotInstalled => Err(format!(
            "{TOOLCHAIN_VAR}={toolchain}, but rustup has no such toolchain: \
             `rustup toolchain install {toolchain} --component rust-src`"
        )),
        Nightly::NoRustup => Err(format!(
            "{TOOLCHAIN_VAR}={toolchain}, but rustup is not installed"
        )),
    }
}

/// Stdout of a command that succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

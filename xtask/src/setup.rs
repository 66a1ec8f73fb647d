//! `cargo xtask setup`: everything building and running mmtrace needs, on
//! Debian 12 with only rustup. Each step checks first and installs only what
//! is missing. [`check`] only looks, for the tasks that must not install.
//!
//! Rust eBPF needs `core` for bpfel-unknown-none. rustup's rust-src (aya's
//! usual `-Z build-std`) may not be available; Debian's rustc-web ships a
//! prebuilt one (package libstd-rust-web-dev-bpf). bpf-linker must use the
//! same LLVM major as that rustc, so it is built against Debian's LLVM. See
//! docs/building.md and ebpf_toolchain.rs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    cargo, cargo_home,
    ebpf_toolchain::{
        self, debian_missing, find_bpf_linker, find_tool, Nightly, Route, DEBIAN_RUSTC as RUSTC,
        NIGHTLY,
    },
    is_root, kernels, need_sudo, run, show, stdout_of, step, which, workspace_root,
};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Installed for `cargo xtask fuzz` when no cargo-fuzz is (any version will
/// do).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Written when we install bpf-linker: the LLVM major it was built for.
const LLVM_MARKER: &str = ".mmtrace-bpf-linker-llvm";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Where the export test's Perfetto reader lives (under the workspace).
const PERFETTO_VENV: &str = "target/perfetto-py";
/// Perfetto's Python package (Apache-2.0), which ships the generated
/// classes of its trace schema, and the protobuf runtime it needs.
const PERFETTO_PACKAGES: &[&str] = &["perfetto==0.59.1", "protobuf==7.36.2"];
/// Imports what tests/perfetto/check.py imports.
const PERFETTO_IMPORT_CHECK: &str =
    "from perfetto.protos.perfetto.trace import perfetto_trace_pb2; \
     from google.protobuf.unknown_fields import UnknownFieldSet";

/// Marks the policy-rc.d that `setup` writes while it installs prometheus.
const POLICY_MARK: &str = "# mmtrace xtask setup: no service starts while prometheus installs";

/// `fuzzing`: also install cargo-fuzz, for `cargo xtask fuzz` (the `setup`
/// task does; `run` and `test`, which set up what they need, do not).
pub fn setup(dry_run: bool, fuzzing: bool) -> Result<()> {
    let mut setup = Setup {
        dry_run,
        apt_updated: false,
    };
    Setup::privileges();
    setup.rustc_web()?;
    let llvm = setup.llvm()?;
    setup.bpftool();
    setup.multilib()?;
    setup.perfetto_python()?;
    setup.chromium()?;
    setup.prometheus()?;
    setup.bpf_linker(llvm)?;
    setup.tracefs()?;
    setup.qemu()?;
    route()?;
    if fuzzing {
        setup.fuzzing();
    }
    step(if dry_run {
        "setup: dry run done, nothing was changed"
    } else {
        "setup: done"
    });
    Ok(())
}

/// What `cargo xtask bench` compares mmtrace with: strace, perf (`perf
/// trace`) and bpftrace (the count-only floor and a one-liner doing
/// mmtrace's job). Installs the missing ones.
pub fn bench_tools() -> Result<()> {
    let mut setup = Setup {
        dry_run: false,
        apt_updated: false,
    };
    let missing: Vec<&str> = ["strace", "linux-perf", "bpftrace"]
        .into_iter()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        step("bench tools: strace, perf and bpftrace are installed");
        return Ok(());
    }
    step(format!("bench tools: missing {}", missing.join(", ")));
    setup.apt_install(&missing)
}

/// Checks, without installing anything, that the toolchain the build will
/// use is complete; names each missing piece. For `build` and `bench`.
pub fn check() -> Result<()> {
    let mut missing = Vec::new();
    match route()? {
        Route::Debian => {
            missing = debian_missing();
            match rustc_llvm_major()? {
                Some(major) => {
                    if let Err(problem) = bpf_linker_state(major) {
                        missing.push(format!(
                            "bpf-linker {BPF_LINKER_VERSION} built for LLVM {major} ({problem})"
                        ));
                    }
                }
                None if find_bpf_linker().is_none() => {
                    missing.push("bpf-linker (in PATH or $CARGO_HOME/bin)".to_string());
                }
                None => {}
            }
        }
        Route::Nightly(_) => {
            if find_bpf_linker().is_none() {
                missing.push("bpf-linker (in PATH or $CARGO_HOME/bin)".to_string());
            }
        }
    }
    if missing.is_empty() {
        step("toolchain: everything the build needs is installed");
        return Ok(());
    }
    for item in &missing {
        step(format!("toolchain: missing {item}"));
    }
    bail!(
        "the eBPF toolchain is incomplete (missing: {}): run `cargo xtask setup` first",
        missing.join("; ")
    )
}

/// Tells which route tracer/build.rs will take (ebpf_toolchain::choose).
fn route() -> Result<Route> {
    let choice = ebpf_toolchain::choose().map_err(anyhow::Error::msg)?;
    match &choice.route {
        Route::Debian => step(format!("eBPF build: Debian's rustc-web ({RUSTC})")),
        Route::Nightly(toolchain) => step(format!(
            "eBPF build: rustup's {toolchain} with rust-src, through aya-build (aya's usual route)"
        )),
    }
    if let Some(note) = &choice.note {
        step(format!("eBPF build: {note}"));
    }
    Ok(choice.route)
}

struct Setup {
    dry_run: bool,
    apt_updated: bool,
}

impl Setup {
    /// (e) apt-get, mount and mmtrace itself need root.
    fn privileges() {
        if is_root() {
            step("privileges: running as root");
        } else if which("sudo").is_some() {
            step("privileges: not root; apt-get, mount, mmtrace and the tests will use sudo");
        } else {
            step(
                "privileges: NOT root and no sudo: installing packages, mounting tracefs, \
                 running mmtrace and the tests all need root",
            );
        }
    }

    /// (a) Debian's rustc-web with its prebuilt `core` for the BPF target.
    fn rustc_web(&mut self) -> Result<()> {
        let missing = debian_missing();
        if missing.is_empty() {
            step(format!(
                "rustc-web: {RUSTC} and its bpfel-unknown-none core are installed"
            ));
            return Ok(());
        }
        step(format!("rustc-web: missing {}", missing.join(" and ")));
        self.apt_install(&["rustc-web", "libstd-rust-web-dev-bpf"])
    }

    /// (b) The LLVM that bpf-linker must be built against: the same major as
    /// /usr/bin/rustc's. Returns that major (None in a dry run without rustc).
    fn llvm(&mut self) -> Result<Option<u32>> {
        let Some(major) = rustc_llvm_major()? else {
            step("llvm: would read the LLVM version of /usr/bin/rustc once it is installed");
            return Ok(None);
        };
        let packages = [
            format!("llvm-{major}-dev"),
            format!("libpolly-{major}-dev"),
            "zlib1g-dev".to_string(),
            "libzstd-dev".to_string(),
        ];
        let missing: Vec<&str> = packages
            .iter()
            .map(String::as_str)
            .filter(|p| !deb_installed(p))
            .collect();
        if missing.is_empty() {
            step(format!(
                "llvm: {RUSTC} uses LLVM {major}; {} are installed",
                packages.join(", ")
            ));
            return Ok(Some(major));
        }
        step(format!(
            "llvm: {RUSTC} uses LLVM {major}; missing {}",
            missing.join(", ")
        ));
        self.apt_update()?;
        let llvm_dev = format!("llvm-{major}-dev");
        if missing.contains(&llvm_dev.as_str()) && !apt_knows(&llvm_dev) {
            if self.dry_run {
                step(format!(
                    "llvm: apt does not know {llvm_dev} (its lists may be stale)"
                ));
                return Ok(Some(major));
            }
            bail!(
                "{RUSTC} (rustc-web) uses LLVM {major}, but apt has no {llvm_dev}: bpf-linker \
                 must be built against the same LLVM major as rustc. Install LLVM {major} \
                 development files so /usr/lib/llvm-{major} exists (e.g. from apt.llvm.org), \
                 or install a rustc-web whose LLVM Debian ships"
            );
        }
        self.apt_install(&missing)?;
        Ok(Some(major))
    }

    /// bpftool, used by the tests to check that nothing stays attached.
    /// Optional: never fails the setup.
    fn bpftool(&mut self) {
        if deb_installed("bpftool") || which("bpftool").is_some() {
            step("bpftool: installed");
            return;
        }
        // Refresh apt's lists for bpftool alone only if we did anyway.
        if !self.apt_updated && !apt_knows("bpftool") {
            step("bpftool: not installed and unknown to apt; skipping (optional, for the tests)");
            return;
        }
        step("bpftool: not installed (optional, for the tests)");
        if let Err(e) = self.apt_install(&["bpftool"]) {
            step(format!(
                "bpftool: not installed ({e:#}); skipping, it is optional"
            ));
        }
    }

    /// gcc-multilib, for the test that runs a 32-bit program (`gcc -m32`:
    /// tests/tests/compat.rs).
    fn multilib(&mut self) -> Result<()> {
        if deb_installed("gcc-multilib") {
            step("gcc-multilib: installed");
            return Ok(());
        }
        step("gcc-multilib: not installed (the tests build a 32-bit program with gcc -m32)");
        self.apt_install(&["gcc-multilib"])
    }

    /// Chromium, headless: the HTML report's test loads the page in it
    /// (tests/tests/html.rs), and `cargo xtask screenshot` draws
    /// docs/report-html.png with it.
    fn chromium(&mut self) -> Result<()> {
        if deb_installed("chromium") || which("chromium").is_some() {
            step("chromium: installed");
            return Ok(());
        }
        step("chromium: not installed (the HTML report's test renders the page in it)");
        self.apt_install(&["chromium"])
    }

    /// Prometheus's server (Debian's `prometheus`): the daemon's metrics
    /// test starts one on a loopback port to scrape the daemon
    /// (tests/tests/metrics.rs). Only the program is wanted: no
    /// recommended packages (node exporter...), and the package's own
    /// service is neither started (a temporary policy-rc.d denies it, as in
    /// a container) nor left enabled where systemd runs.
    fn prometheus(&mut self) -> Result<()> {
        if deb_installed("prometheus") || which("prometheus").is_some() {
            step("prometheus: installed");
            return Ok(());
        }
        step("prometheus: not installed (the daemon's metrics test scrapes it with a real Prometheus)");
        if which("apt-get").is_none() {
            bail!("apt-get not found: this setup knows Debian 12 only; install prometheus by hand");
        }
        self.apt_update()?;
        let policy = "/usr/sbin/policy-rc.d";
        // Ours (marked), left by an interrupted setup, or none: ours for
        // the install; someone else's (a container's): theirs, kept.
        let ours = fs::read_to_string(policy).map_or(true, |text| text.contains(POLICY_MARK));
        if ours {
            let script = format!("#!/bin/sh\n{POLICY_MARK}\nexit 101\n");
            self.privileged(&[
                "sh",
                "-c",
                &format!("printf '%s' '{script}' > {policy} && chmod 755 {policy}"),
            ])?;
        }
        let installed = self.privileged(&[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "prometheus",
        ]);
        if ours {
            self.privileged(&["rm", "-f", policy])?;
        }
        installed?;
        if Path::new("/run/systemd/system").is_dir() {
            // Enabled by its postinst: the tests start their own.
            self.privileged(&["systemctl", "disable", "--now", "prometheus.service"])?;
        }
        Ok(())
    }

    /// Perfetto's own Python package (its generated `perfetto_trace_pb2`
    /// and the protobuf runtime), pinned, in a venv under target/: the
    /// export test reads mmtrace's Perfetto traces with Perfetto's schema
    /// through it (tests/perfetto/check.py). Debian's python3 needs
    /// python3-venv for that.
    fn perfetto_python(&mut self) -> Result<()> {
        let venv = workspace_root().join(PERFETTO_VENV);
        let python = venv.join("bin/python");
        let ready = || {
            Command::new(&python)
                .args(["-c", PERFETTO_IMPORT_CHECK])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if ready() {
            step(format!("perfetto (python): installed in {PERFETTO_VENV}"));
            return Ok(());
        }
        step(format!(
            "perfetto (python): not installed (the export test reads traces with \
             Perfetto's schema); installing {PERFETTO_PACKAGES:?} into {PERFETTO_VENV}"
        ));
        let system_python = if Path::new("/usr/bin/python3").is_file() {
            PathBuf::from("/usr/bin/python3")
        } else if let Some(p) = which("python3") {
            p
        } else {
            self.apt_install(&["python3", "python3-venv"])?;
            PathBuf::from("/usr/bin/python3")
        };
        let has_venv = Command::new(&system_python)
            .args(["-c", "import ensurepip, venv"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_venv {
            self.apt_install(&["python3-venv"])?;
        }
        if self.dry_run {
            step(format!(
                "would run: {} -m venv {}; pip install {}",
                system_python.display(),
                venv.display(),
                PERFETTO_PACKAGES.join(" ")
            ));
            return Ok(());
        }
        // A half-made venv (an interrupted setup) is made again.
        let _ = fs::remove_dir_all(&venv);
        run(Command::new(&system_python)
            .arg("-m")
            .arg("venv")
            .arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PERFETTO_PACKAGES))?;
        if !ready() {
            bail!(
                "{} cannot import Perfetto's trace classes after installing {PERFETTO_PACKAGES:?}",
                python.display()
            );
        }
        Ok(())
    }

    /// (c) bpf-linker, at our version and built for rustc's LLVM major.
    fn bpf_linker(&self, llvm: Option<u32>) -> Result<()> {
        let Some(major) = llvm else {
            step("bpf-linker: would check it once /usr/bin/rustc is installed");
            return Ok(());
        };
        let problem = match bpf_linker_state(major) {
            Ok(path) => {
                step(format!(
                    "bpf-linker: {} is {BPF_LINKER_VERSION}, built for LLVM {major}",
                    path.display()
                ));
                return Ok(());
            }
            Err(problem) => problem,
        };
        step(format!(
            "bpf-linker: {problem}; installing {BPF_LINKER_VERSION} for LLVM {major} \
             (takes 3-6 minutes)"
        ));
        check_llvm_feature(major)?;

        let feature = format!("llvm-{major}");
        let install = |locked: bool| -> Result<()> {
            let mut cmd = cargo();
            cmd.env("LLVM_PREFIX", format!("/usr/lib/llvm-{major}"))
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", &feature, "--force"]);
            if locked {
                cmd.arg("--locked");
            }
            if self.dry_run {
                step(format!("would run: {}", show(&cmd)));
                return Ok(());
            }
            run(&mut cmd)
        };
        if install(true).is_err() {
            step("bpf-linker: install with --locked failed; retrying without --locked");
            install(false).with_context(|| {
                format!(
                    "cannot build bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (see \
                     cargo's output above); it needs llvm-{major}-dev, libpolly-{major}-dev, \
                     zlib1g-dev and libzstd-dev, and /usr/lib/llvm-{major}"
                )
            })?;
        }
        if !self.dry_run {
            let marker = cargo_home().join(LLVM_MARKER);
            fs::write(&marker, format!("{major}\n"))
                .with_context(|| format!("cannot write {}", marker.display()))?;
            step(format!(
                "bpf-linker: installed; recorded LLVM {major} in {}",
                marker.display()
            ));
            let installed = cargo_home().join("bin").join("bpf-linker");
            if let Some(other) = find_bpf_linker().filter(|p| !same_file(p, &installed)) {
                bail!(
                    "{} comes first in PATH and hides the new {}: remove it",
                    other.display(),
                    installed.display()
                );
            }
        }
        Ok(())
    }

    /// (f) cargo-fuzz for `cargo xtask fuzz`, which also needs a rustup
    /// nightly (for the sanitizer flags; rustup installs that, not this
    /// setup). Optional: never fails the setup.
    fn fuzzing(&self) {
        match fuzz_tools_missing().as_slice() {
            [] => step("fuzzing: cargo-fuzz and rustup's nightly are installed"),
            missing => step(format!("fuzzing: missing {}", missing.join(" and "))),
        }
        if find_tool("cargo-fuzz").is_some() {
            return;
        }
        let mut cmd = cargo();
        cmd.args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION])
            .arg("--locked");
        if self.dry_run {
            step(format!("would run: {}", show(&cmd)));
        } else if let Err(e) = run(&mut cmd) {
            step(format!(
                "fuzzing: cargo-fuzz not installed ({e:#}); skipping, it is only for \
                 `cargo xtask fuzz`"
            ));
        }
    }

    /// (d) aya finds tracepoints through tracefs, which a fresh machine
    /// lacks.
    fn tracefs(&self) -> Result<()> {
        if Path::new(TRACEFS).join("events").is_dir() || tracefs_mounted() {
            step(format!("tracefs: mounted at {TRACEFS}"));
            return Ok(());
        }
        step(format!(
            "tracefs: not mounted; mounting it at {TRACEFS} (until the next reboot)"
        ));
        self.privileged(&["mount", "-t", "tracefs", "nodev", TRACEFS])
    }

    /// (f) qemu and busybox-static, to boot other kernels
    /// (`cargo xtask test --kernel`). qemu-system-x86 comes from
    /// bookworm-backports (10.x: the image's qemu-utils is from there, and
    /// bookworm's 7.2 conflicts with it), through a private APT
    /// configuration in target/kernels/apt so the system's sources stay
    /// untouched.
    fn qemu(&self) -> Result<()> {
        let missing = kernels::missing_tools();
        if missing.is_empty() {
            step(format!(
                "qemu: {} and a static {} are installed (for --kernel)",
                kernels::QEMU,
                kernels::BUSYBOX
            ));
            return Ok(());
        }
        step(format!(
            "qemu: missing {}; installing qemu-system-x86 (bookworm-backports) and \
             busybox-static, for `cargo xtask test --kernel`",
            missing.join(", ")
        ));
        let conf = kernels::apt_config()?;
        let apt_config = format!("APT_CONFIG={}", conf.display());
        self.privileged(&["env", &apt_config, "apt-get", "update", "-q"])?;
        self.privileged(&[
            "env",
            &apt_config,
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            "qemu-system-x86",
            "busybox-static",
            "xz-utils",
            "zstd",
        ])?;
        let missing = kernels::missing_tools();
        if !missing.is_empty() {
            if self.dry_run {
                return Ok(());
            }
            bail!("still missing after installing: {}", missing.join(", "));
        }
        Ok(())
    }

    fn apt_update(&mut self) -> Result<()> {
        if !self.apt_updated {
            self.privileged(&["apt-get", "update"])?;
            self.apt_updated = true;
        }
        Ok(())
    }

    fn apt_install(&mut self, packages: &[&str]) -> Result<()> {
        if which("apt-get").is_none() {
            bail!(
                "apt-get not found: this setup knows Debian 12 only; install {} by hand",
                packages.join(" ")
            );
        }
        self.apt_update()?;
        let mut args = vec!["apt-get", "install", "-y"];
        args.extend(packages);
        self.privileged(&args)
    }

    /// Runs a command as root (through sudo if needed), or only prints it in
    /// a dry run.
    fn privileged(&self, args: &[&str]) -> Result<()> {
        // apt-get must never ask questions. sudo drops the environment, so
        // then the variable goes through `env`.
        let noninteractive = "DEBIAN_FRONTEND=noninteractive";
        let apt = args[0] == "apt-get";
        let mut cmd = if is_root() {
            let mut cmd = Command::new(args[0]);
            if apt {
                cmd.env("DEBIAN_FRONTEND", "noninteractive");
            }
            cmd
        } else {
            let mut cmd = Command::new("sudo");
            cmd.arg("env")
                .args(apt.then_some(noninteractive))
                .arg(args[0]);
            cmd
        };
        cmd.args(&args[1..]);
        if self.dry_run {
            step(format!("would run: {}", show(&cmd)));
            return Ok(());
        }
        need_sudo(&format!("`{}` needs root", args.join(" ")))?;
        run(&mut cmd)
    }
}

/// The installed bpf-linker if it is ours (our version, built for LLVM
/// `major`), else what is wrong with it.
fn bpf_linker_state(major: u32) -> Result<PathBuf, String> {
    let Some(path) = find_bpf_linker() else {
        return Err("not installed".to_string());
    };
    let version = stdout_of(Command::new(&path).arg("--version")).map(|v| v.trim().to_string());
    let built_for = linked_llvm_major(&path).or_else(|| {
        let text = fs::read_to_string(cargo_home().join(LLVM_MARKER)).ok()?;
        text.trim().parse::<u32>().ok()
    });
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    Err(match (version, built_for) {
        (None, _) => format!("{} does not run", path.display()),
        (Some(v), _) if v != want => {
            format!("{} is {v:?}, not {BPF_LINKER_VERSION}", path.display())
        }
        (_, Some(m)) if m == major => return Ok(path),
        (_, Some(m)) => format!(
            "{} was built for LLVM {m}, but {RUSTC} uses LLVM {major}",
            path.display()
        ),
        (_, None) => format!("cannot tell which LLVM {} was built for", path.display()),
    })
}

/// What `cargo xtask fuzz` needs besides the build's toolchain ([`check`]):
/// each missing piece, with how to get it.
pub fn fuzz_tools_missing() -> Vec<String> {
    let mut missing = Vec::new();
    match ebpf_toolchain::nightly(NIGHTLY) {
        Nightly::NoRustup => missing.push("rustup (for a nightly toolchain)".to_string()),
        Nightly::NotInstalled => missing.push(format!(
            "rustup's {NIGHTLY} toolchain (`rustup toolchain install {NIGHTLY}`)"
        )),
        Nightly::NoRustSrc { sysroot } | Nightly::Ready { sysroot } => {
            // cargo fuzz builds with AddressSanitizer, whose runtime ships
            // with the nightly's standard library.
            let rustlib = sysroot.join("lib/rustlib");
            let has_asan = fs::read_dir(&rustlib).is_ok_and(|dir| {
                dir.flatten().any(|target| {
                    target
                        .path()
                        .join("lib/librustc-nightly_rt.asan.a")
                        .is_file()
                })
            });
            if !has_asan {
                missing.push(format!(
                    "the AddressSanitizer runtime of rustup's {NIGHTLY} \
                     ({}/*/lib/librustc-nightly_rt.asan.a)",
                    rustlib.display()
                ));
            }
        }
    }
    if find_tool("cargo-fuzz").is_none() {
        missing.push(format!(
            "cargo-fuzz (`cargo xtask setup` installs {CARGO_FUZZ_VERSION})"
        ));
    }
    missing
}

/// `LLVM version: 22.1.8` in `/usr/bin/rustc -vV` -> 22. None if rustc is
/// missing (only possible in a dry run).
fn rustc_llvm_major() -> Result<Option<u32>> {
    if !Path::new(RUSTC).is_file() {
        return Ok(None);
    }
    let info = stdout_of(Command::new(RUSTC).arg("-vV"))
        .with_context(|| format!("`{RUSTC} -vV` failed"))?;
    let major = info
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next()?.trim().parse().ok())
        .with_context(|| format!("no `LLVM version: N.x` line in `{RUSTC} -vV`:\n{info}"))?;
    Ok(Some(major))
}

fn deb_installed(package: &str) -> bool {
    stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

fn apt_knows(package: &str) -> bool {
    stdout_of(Command::new("apt-cache").args(["show", package]))
        .is_some_and(|out| !out.trim().is_empty())
}

/// The LLVM major a dynamically linked bpf-linker loads (`libLLVM.so.22.1`
/// or `libLLVM-22.so` in ldd's output).
fn linked_llvm_major(bpf_linker: &Path) -> Option<u32> {
    let ldd = stdout_of(Command::new("ldd").arg(bpf_linker))?;
    ldd.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// Fails clearly when bpf-linker has no `llvm-NN` feature for rustc's LLVM.
/// Asks crates.io through `cargo info`; if that fails, lets the install try.
fn check_llvm_feature(major: u32) -> Result<()> {
    let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
    let Some(info) = stdout_of(cargo().args(["info", &spec])) else {
        step(format!(
            "bpf-linker: `cargo info {spec}` failed; trying the install anyway"
        ));
        return Ok(());
    };
    let mut features: Vec<&str> = info
        .lines()
        .filter_map(|line| {
            let name = line
                .trim()
                .trim_start_matches('+')
                .split_whitespace()
                .next()?;
            let digits = name.strip_prefix("llvm-")?;
            digits.bytes().all(|b| b.is_ascii_digit()).then_some(name)
        })
        .collect();
    features.sort_unstable();
    let wanted = format!("llvm-{major}");
    if !features.is_empty() && !features.contains(&wanted.as_str()) {
        bail!(
            "{RUSTC} uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} only supports {} \
             (no `{wanted}` feature). Use a bpf-linker version that supports LLVM {major} \
             (BPF_LINKER_VERSION in xtask/src/setup.rs), or a rustc-web whose LLVM it supports",
            features.join(", ")
        );
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    fs::canonicalize(a)
        .ok()
        .is_some_and(|a| fs::canonicalize(b).ok() == Some(a))
}

fn tracefs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&TRACEFS) && fields.get(2) == Some(&"tracefs")
        })
    })
}

//! `cargo xtask test --kernel VERSION [--smoke]`: mmtrace on other kernels.
//!
//! For each kernel: Debian's kernel package (fetched with `apt-get download`
//! under a private APT configuration, cached under target/kernels/), a tiny
//! initramfs (busybox-static and the kernel's own virtio and 9p modules),
//! then qemu with software emulation (TCG). The guest mounts the host's `/`
//! read-only over 9p, so it runs the very binaries built here, and writes
//! its output and exit status to a second, writable 9p share.
//!
//! `setup` installs qemu-system-x86 (from bookworm-backports) and
//! busybox-static; these tasks only check for them.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{as_root, cargo, run, setup, show, stdout_of, step, target_dir, which, workspace_root};

/// The kernels we boot: Debian 11's, Debian 12's and Debian 12's backports.
/// (The host's own kernel is what `cargo xtask test` tests.)
pub const KERNELS: &[Kernel] = &[
    Kernel {
        version: "5.10",
        suite: "bullseye-security",
    },
    Kernel {
        version: "6.1",
        suite: "bookworm-security",
    },
    Kernel {
        version: "6.12",
        suite: "bookworm-backports",
    },
];

pub struct Kernel {
    /// `major.minor`, as given to `--kernel`.
    pub version: &'static str,
    /// Where Debian ships its newest build (for messages).
    pub suite: &'static str,
}

/// What the guest runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The root integration tests (package `tests`).
    Full,
    /// A few mmtrace commands that load every program.
    Smoke,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "tests",
            Mode::Smoke => "smoke",
        }
    }

    /// Default time limit for one kernel, boot included. Measured under TCG
    /// here: the full suite 11.5-13.5 min, the smoke 1-3 min.
    fn default_limit(self) -> Duration {
        match self {
            Mode::Full => Duration::from_mins(45),
            Mode::Smoke => Duration::from_mins(10),
        }
    }
}

/// The modules the guest needs for its 9p shares; their dependencies are
/// read from the modules themselves.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// The kernels named on the command line (`all`, or versions, comma lists).
pub fn select(names: &[String]) -> Result<Vec<&'static Kernel>> {
    let mut chosen: Vec<&'static Kernel> = Vec::new();
    for name in names {
        if name == "all" {
            chosen.extend(KERNELS);
            continue;
        }
        match KERNELS.iter().find(|k| k.version == name) {
            Some(k) => chosen.push(k),
            None => bail!(
                "no kernel {name:?}: choose among {} or `all` (the host's own kernel is what \
                 `cargo xtask test` without --kernel tests)",
                KERNELS
                    .iter()
                    .map(|k| k.version)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let mut seen = BTreeSet::new();
    chosen.retain(|k| seen.insert(k.version));
    Ok(chosen)
}

/// Runs `mode` on each kernel in turn; fails if any kernel fails.
pub fn test(kernels: &[&'static Kernel], mode: Mode, limit: Option<Duration>) -> Result<()> {
    check_tools()?;
    setup::check()?;
    let limit = limit.unwrap_or_else(|| mode.default_limit());

    // The binaries the guest runs, built here (the guest sees this tree).
    run(cargo()
        .arg("build")
        .args(crate::HOST_PACKAGES)
        .arg("--bins"))?;
    let mmtrace = target_dir().join("debug").join("mmtrace");
    if !mmtrace.is_file() {
        bail!("{} was not built", mmtrace.display());
    }
    let binaries = match mode {
        Mode::Full => test_binaries()?,
        Mode::Smoke => Vec::new(),
    };

    let mut results = Vec::new();
    for kernel in kernels {
        let started = Instant::now();
        let outcome = one_kernel(kernel, mode, limit, &mmtrace, &binaries);
        let took = started.elapsed();
        match &outcome {
            Ok(c) => step(format!(
                "kernel {}: {} {} passed, {} failed, {} skipped in {}",
                kernel.version,
                mode.name(),
                c.passed,
                c.failed,
                c.ignored,
                minutes(took)
            )),
            Err(e) => step(format!(
                "kernel {}: {} FAILED after {}: {e:#}",
                kernel.version,
                mode.name(),
                minutes(took)
            )),
        }
        results.push((kernel.version, outcome, took));
    }

    step(format!("{} on other kernels:", mode.name()));
    let (mut passed, mut failed, mut ignored, mut broken) = (0, 0, 0, Vec::new());
    for (version, outcome, took) in &results {
        let Ok(c) = outcome else {
            println!("    {version:<5} did not complete ({})", minutes(*took));
            broken.push(*version);
            continue;
        };
        println!(
            "    {version:<5} {:>3} passed, {:>2} failed, {:>2} skipped  ({})",
            c.passed,
            c.failed,
            c.ignored,
            minutes(*took)
        );
        passed += c.passed;
        failed += c.failed;
        ignored += c.ignored;
        if c.failed > 0 || c.passed == 0 {
            broken.push(*version);
        }
    }
    println!(
        "{}: {passed} passed, {failed} failed, {ignored} skipped",
        mode.name()
    );
    if !broken.is_empty() {
        bail!(
            "{} failed on kernel {} (guest output under {})",
            mode.name(),
            broken.join(", "),
            kernels_dir().join("runs").display()
        );
    }
    Ok(())
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

#[derive(Default, Debug)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

fn one_kernel(
    kernel: &Kernel,
    mode: Mode,
    limit: Duration,
    mmtrace: &Path,
    binaries: &[(String, PathBuf)],
) -> Result<Counts> {
    let files = fetch(kernel)?;
    let run_dir = kernels_dir()
        .join("runs")
        .join(format!("{}-{}", kernel.version, mode.name()));
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clear {}", run_dir.display()))?;
    }
    let share = run_dir.join("share");
    fs::create_dir_all(&share)?;
    let initramfs = run_dir.join("initramfs.cpio");
    build_initramfs(&files, &initramfs)?;
    let script = match mode {
        Mode::Full => full_script(mmtrace, binaries),
        Mode::Smoke => smoke_script(mmtrace),
    };
    write_executable(&share.join("guest.sh"), &script)?;

    step(format!(
        "kernel {}: booting {} under qemu (TCG; time limit {})",
        kernel.version,
        files.package,
        minutes(limit)
    ));
    let console = run_dir.join("console.log");
    let finished = boot(&files, &initramfs, &share, &console, limit)?;

    let status = fs::read_to_string(share.join("status")).unwrap_or_default();
    let log = fs::read_to_string(share.join("log")).unwrap_or_default();
    let counts = match mode {
        Mode::Full => count_test_results(&log),
        Mode::Smoke => count_smoke_results(&log),
    };
    if !finished {
        bail!(
            "the guest did not finish within {} (console: {})",
            minutes(limit),
            console.display()
        );
    }
    if status.trim().is_empty() {
        bail!(
            "the guest wrote no exit status: it did not boot or its script did not run \
             (console: {})",
            console.display()
        );
    }
    if counts.passed == 0 && counts.failed == 0 {
        bail!(
            "the guest ran no test (status {:?}; log {})",
            status.trim(),
            share.join("log").display()
        );
    }
    if status.trim() != "0" && counts.failed == 0 {
        bail!(
            "the guest's script exited with {} (log {})",
            status.trim(),
            share.join("log").display()
        );
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

pub const QEMU: &str = "qemu-system-x86_64";
pub const BUSYBOX: &str = "/bin/busybox";

/// What the kernel tasks need on the host and `setup` installs; empty when
/// everything is there.
pub fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if which(QEMU).is_none() {
        missing.push(format!(
            "{QEMU} (package qemu-system-x86, from bookworm-backports)"
        ));
    }
    if !busybox_is_static() {
        missing.push(format!("a static {BUSYBOX} (package busybox-static)"));
    }
    for tool in ["apt-get", "dpkg-deb", "xz", "zstd"] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    missing
}

fn check_tools() -> Result<()> {
    let missing = missing_tools();
    if missing.is_empty() {
        step(format!("kernels: {QEMU} and busybox-static are installed"));
        return Ok(());
    }
    for item in &missing {
        step(format!("kernels: missing {item}"));
    }
    bail!(
        "booting other kernels needs {}: run `cargo xtask setup` first",
        missing.join("; ")
    )
}

/// busybox-static's binary is statically linked (the dynamic `busybox`
/// package installs the same path).
pub fn busybox_is_static() -> bool {
    let Ok(bytes) = fs::read(BUSYBOX) else {
        return false;
    };
    // An ELF file with a PT_INTERP program header is dynamically linked.
    elf_has_interp(&bytes) == Some(false)
}

fn elf_has_interp(elf: &[u8]) -> Option<bool> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 {
        return None; // not a 64-bit ELF
    }
    let u64_at = |off: usize| -> Option<u64> {
        Some(u64::from_le_bytes(elf.get(off..off + 8)?.try_into().ok()?))
    };
    let u16_at = |off: usize| -> Option<u16> {
        Some(u16::from_le_bytes(elf.get(off..off + 2)?.try_into().ok()?))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let p_type = u32::from_le_bytes(
            elf.get(phoff + i * phentsize..phoff + i * phentsize + 4)?
                .try_into()
                .ok()?,
        );
        if p_type == 3 {
            return Some(true); // PT_INTERP
        }
    }
    Some(false)
}

// ---------------------------------------------------------------------------
// The private APT configuration
// ---------------------------------------------------------------------------

pub fn kernels_dir() -> PathBuf {
    target_dir().join("kernels")
}

/// Writes target/kernels/apt/apt.conf: Debian 12 with bookworm-backports,
/// and Debian 11 (bullseye, bullseye-security) for its 5.10 kernel, with
/// lists and cache of its own so the system's sources stay untouched.
/// Returns the path for APT_CONFIG.
pub fn apt_config() -> Result<PathBuf> {
    let dir = kernels_dir().join("apt");
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    let mut sources = String::new();
    for (archive, suite) in [
        ("debian", "bookworm"),
        ("debian", "bookworm-updates"),
        ("debian-security", "bookworm-security"),
        ("debian", "bookworm-backports"),
        ("debian", "bullseye"),
        ("debian-security", "bullseye-security"),
    ] {
        let _ = writeln!(
            sources,
            "deb {key} http://deb.debian.org/{archive} {suite} main"
        );
    }
    let sources_path = dir.join("sources.list");
    fs::write(&sources_path, sources)?;
    let conf = format!(
        "// Written by `cargo xtask` (xtask/src/kernels.rs): a private APT\n\
         // configuration; the system's own sources and lists are untouched.\n\
         Dir::Etc::sourcelist \"{sources}\";\n\
         Dir::Etc::sourceparts \"{parts}\";\n\
         Dir::State::lists \"{lists}\";\n\
         Dir::Cache \"{cache}\";\n\
         APT::Sandbox::User \"root\";\n",
        sources = sources_path.display(),
        parts = dir.join("sources.list.d").display(),
        lists = dir.join("lists").display(),
        cache = dir.join("cache").display(),
    );
    let conf_path = dir.join("apt.conf");
    fs::write(&conf_path, conf)?;
    Ok(conf_path)
}

/// `apt-get`/`apt-cache` under the private configuration, as root.
fn apt(program: &str, conf: &Path) -> Result<Command> {
    let mut cmd = as_root("env", "apt-get needs root")?;
    cmd.arg(format!("APT_CONFIG={}", conf.display()))
        .arg("DEBIAN_FRONTEND=noninteractive")
        .arg(program);
    Ok(cmd)
}

// ---------------------------------------------------------------------------
// Fetching and unpacking a kernel
// ---------------------------------------------------------------------------

/// An unpacked kernel, cached in target/kernels/VERSION/.
struct KernelFiles {
    /// `linux-image-5.10.0-46-amd64 5.10.262-1`
    package: String,
    vmlinuz: PathBuf,
    /// Decompressed modules, in load order.
    modules: Vec<PathBuf>,
}

fn fetch(kernel: &Kernel) -> Result<KernelFiles> {
    let dir = kernels_dir().join(kernel.version);
    if let Some(files) = cached(&dir) {
        step(format!(
            "kernel {}: using {} cached in {} (delete it to fetch again)",
            kernel.version,
            files.package,
            dir.display()
        ));
        return Ok(files);
    }
    step(format!(
        "kernel {}: fetching Debian's newest {}.x package ({})",
        kernel.version, kernel.version, kernel.suite
    ));
    let conf = apt_config()?;
    // Once per run: the lists serve every kernel fetched after.
    static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        run(apt("apt-get", &conf)?.args(["update", "-q"]))?;
    }

    // linux-image-amd64 (the metapackage) names the current ABI's package.
    let madison = stdout_of(apt("apt-cache", &conf)?.args(["madison", "linux-image-amd64"]))
        .context("apt-cache madison linux-image-amd64 failed")?;
    let prefix = format!("{}.", kernel.version);
    let meta_version = madison
        .lines()
        .filter_map(|line| line.split('|').nth(1).map(str::trim))
        .find(|v| v.starts_with(&prefix))
        .with_context(|| format!("no linux-image-amd64 {prefix}x in {}", kernel.suite))?
        .to_string();
    let show = stdout_of(
        apt("apt-cache", &conf)?.args(["show", &format!("linux-image-amd64={meta_version}")]),
    )
    .context("apt-cache show linux-image-amd64 failed")?;
    let image = show
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))
        .and_then(|deps| {
            deps.split([',', ' '])
                .find(|w| w.starts_with("linux-image-"))
        })
        .with_context(|| format!("linux-image-amd64={meta_version} names no linux-image"))?
        .to_string();

    let debs = kernels_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let mut download = apt("apt-get", &conf)?;
    download
        .current_dir(&debs)
        .args(["download", "-q", &format!("{image}={meta_version}")]);
    run(&mut download)?;
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{image}_"))
                    && Path::new(n).extension().is_some_and(|e| e == "deb")
            })
        })
        .with_context(|| format!("apt-get download left no {image} in {}", debs.display()))?;

    // Unpack next to the cache, keep only what the guest needs.
    let tree = kernels_dir().join(format!("{}.unpack", kernel.version));
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(dir.join("modules"))?;
    let boot = tree.join("boot");
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))?;
    fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let _ = fs::copy(boot.join(format!("config-{release}")), dir.join("config"));
    let moddir = tree.join("lib/modules").join(&release);
    let order = module_order(&moddir, &dir.join("modules"))?;
    fs::write(dir.join("modules/order"), order.join("\n") + "\n")?;
    fs::write(dir.join("package"), format!("{image} {meta_version}\n"))?;
    fs::remove_dir_all(&tree)?;
    // The unpacked files are the cache; the package is not needed again.
    fs::remove_file(&deb)?;
    cached(&dir).context("the unpacked kernel is incomplete")
}

fn cached(dir: &Path) -> Option<KernelFiles> {
    let package = fs::read_to_string(dir.join("package")).ok()?;
    let order = fs::read_to_string(dir.join("modules/order")).ok()?;
    let vmlinuz = dir.join("vmlinuz");
    let modules: Vec<PathBuf> = order
        .lines()
        .filter(|l| !l.is_empty())
        .map(|name| dir.join("modules").join(name))
        .collect();
    if !vmlinuz.is_file() || !modules.iter().all(|m| m.is_file()) {
        return None;
    }
    Some(KernelFiles {
        package: package.trim().to_string(),
        vmlinuz,
        modules,
    })
}

/// Copies (decompressed) the modules the guest needs and their
/// dependencies into `out`; returns their file names in load order.
fn module_order(moddir: &Path, out: &Path) -> Result<Vec<String>> {
    let builtin: BTreeSet<String> = fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_name)
        .collect();
    let mut files = Vec::new();
    collect_files(&moddir.join("kernel"), &mut files)?;
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for wanted in GUEST_MODULES {
        add_module(wanted, &builtin, &files, out, &mut done, &mut order, 0)?;
    }
    Ok(order)
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p` (with `-` read as `_`, as the kernel does).
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    Some(stem.replace('-', "_"))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn add_module(
    name: &str,
    builtin: &BTreeSet<String>,
    files: &[PathBuf],
    out: &Path,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    let name = name.replace('-', "_");
    if done.contains(&name) || builtin.contains(&name) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies too deep at {name}");
    }
    let file = files
        .iter()
        .find(|p| p.to_str().and_then(module_name).as_deref() == Some(name.as_str()))
        .with_context(|| format!("the kernel has no module {name}, built in or not"))?;
    let bytes = read_module(file)?;
    for dep in modinfo_depends(&bytes) {
        add_module(&dep, builtin, files, out, done, order, depth + 1)?;
    }
    let out_name = format!("{name}.ko");
    fs::write(out.join(&out_name), &bytes)?;
    done.insert(name);
    order.push(out_name);
    Ok(())
}

fn read_module(file: &Path) -> Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(file).with_context(|| format!("cannot read {name}"));
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(file)
        .output()
        .with_context(|| format!("cannot run {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {name} failed");
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's .modinfo section.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    module
        .windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &module[at + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The initramfs
// ---------------------------------------------------------------------------

/// Where the guest mounts the writable share (in the host's tree, so a
/// tmpfs must be under it: /run is one in the guest).
const GUEST_SHARE: &str = "/run/mmtrace-out";

fn build_initramfs(files: &KernelFiles, out: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", &fs::read(BUSYBOX)?, 0o755);
    let mut names = Vec::new();
    for module in &files.modules {
        let name = module
            .file_name()
            .context("a module path without a file name")?
            .to_string_lossy()
            .into_owned();
        cpio.file(&format!("modules/{name}"), &fs::read(module)?, 0o644);
        names.push(name);
    }
    cpio.file("init", init_script(&names).as_bytes(), 0o755);
    fs::write(out, cpio.finish()).with_context(|| format!("cannot write {}", out.display()))
}

/// PID 1 of the guest (busybox sh): modules, the 9p shares, the pseudo
/// filesystems, then the host's root as the root and the script there;
/// then power off.
fn init_script(modules: &[String]) -> String {
    let target_tmp = target_dir().join("tmp");
    // The guest's tmpfs on /tmp and /run would hide a workspace (or target
    // directory) under them, as a clone in /tmp: bind them aside first,
    // move them back after.
    let mut keep: Vec<PathBuf> = Vec::new();
    for path in [workspace_root().to_path_buf(), target_dir()] {
        let covered = path.starts_with("/tmp") || path.starts_with("/run");
        if covered && !keep.iter().any(|k| path.starts_with(k)) {
            keep.retain(|k| !k.starts_with(&path));
            keep.push(path);
        }
    }
    let (mut save, mut restore) = (String::new(), String::new());
    for (i, path) in keep.iter().enumerate() {
        let path = path.display();
        let _ = writeln!(
            save,
            "  mkdir -p /keep/{i}; mount -o bind \"$R{path}\" /keep/{i}"
        );
        let _ = writeln!(
            restore,
            "  mkdir -p \"$R{path}\"; mount -o move /keep/{i} \"$R{path}\""
        );
    }
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() {{ echo "mmtrace-guest: $*"; }}
# The loopback interface (down at boot): the metrics test serves and
# scrapes on 127.0.0.1.
ip link set lo up || say "cannot bring the loopback interface up"
for m in {modules}; do insmod /modules/$m || say "insmod $m failed"; done
opts=trans=virtio,version=9p2000.L,msize=262144
if mount -t 9p -o ro,$opts,cache=loose hostroot /newroot; then
  R=/newroot
{save}  mount -t tmpfs -o mode=1777 tmpfs $R/tmp
  mount -t tmpfs -o mode=755 tmpfs $R/run
{restore}  mkdir -p $R{share}
  mount -t 9p -o $opts out $R{share}
  mount -t proc proc $R/proc
  mount -t sysfs sysfs $R/sys
  mount -t devtmpfs devtmpfs $R/dev
  mkdir -p $R/dev/shm $R/dev/pts
  mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
  mount -t devpts devpts $R/dev/pts
  mount -t tracefs nodev $R/sys/kernel/tracing
  mount -t debugfs nodev $R/sys/kernel/debug
  mount -t bpf bpf $R/sys/fs/bpf
  [ -d $R{target_tmp} ] && mount -t tmpfs -o mode=1777 tmpfs $R{target_tmp}
  say "kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
  # switch_root, not chroot: the host's root becomes the root of the mount
  # namespace, so the paths mmtrace's kernel programs walk up to are the
  # paths /proc shows.
  exec switch_root $R /bin/sh -c '/bin/sh {share}/guest.sh
    echo "mmtrace-guest: guest script exited with $?"
    sync; echo o > /proc/sysrq-trigger; sleep 30'
fi
say "cannot mount the host's root over 9p"
echo o > /proc/sysrq-trigger
sleep 30
"#,
        modules = modules.join(" "),
        share = GUEST_SHARE,
        target_tmp = target_tmp.display(),
    )
}

/// A `newc` cpio archive, as the kernel unpacks into its rootfs.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,                                             // uid
            0,                                             // gid
            1,                                             // nlink
            0,                                             // mtime
            u32::try_from(body.len()).unwrap_or(u32::MAX), // files of a few MiB
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(namesize).unwrap_or(u32::MAX), // short names
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, body: &[u8], perm: u32) {
        self.entry(name, 0o100_000 | perm, (0, 0), body);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

// ---------------------------------------------------------------------------
// What the guest runs
// ---------------------------------------------------------------------------

/// The test executables of package `tests`, as cargo built them.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "tests", "--tests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit());
    step(show(&cmd));
    let out = cmd.output().context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        binaries.push((name.to_string(), PathBuf::from(exe)));
    }
    if binaries.is_empty() {
        bail!("cargo built no test binary for package tests");
    }
    binaries.sort();
    Ok(binaries)
}

/// The environment every guest script starts with.
fn script_head(mmtrace: &Path) -> String {
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask test --kernel` (xtask/src/kernels.rs); run by the
# guest's init with the host's root (read-only) as its root. Output goes to {share}/log,
# the exit status to {share}/status.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp RUST_BACKTRACE=1
export MMTRACE_BIN={mmtrace}
OUT={share}
cd {tests_dir} || exit 2
echo "kernel $(uname -r)" >> $OUT/log
"#,
        share = GUEST_SHARE,
        mmtrace = mmtrace.display(),
        tests_dir = workspace_root().join("tests").display(),
    )
}

fn full_script(mmtrace: &Path, binaries: &[(String, PathBuf)]) -> String {
    let mut script = script_head(mmtrace);
    script.push_str("export MMTRACE_TESTS_REQUIRE_ROOT=1 MMTRACE_TESTS_EMULATED=1\nfailed=0\n");
    for (name, exe) in binaries {
        let _ = write!(
            script,
            r#"echo "mmtrace-guest: running {name} ($(cut -d' ' -f1 /proc/uptime) s)"
{{ timeout -k 10 900 {exe} 2>&1; echo $? > $OUT/rc; }} | tee -a $OUT/log
[ "$(cat $OUT/rc)" = 0 ] || failed=$((failed + 1))
"#,
            exe = exe.display()
        );
    }
    script.push_str("echo $failed > $OUT/status\n");
    script
}

/// The load-and-smoke commands: together they load every program.
fn smoke_script(mmtrace: &Path) -> String {
    let mut script = script_head(mmtrace);
    script.push_str(
        r#"pass=0
fail=0
# smoke NAME CHECK CMD...: CMD must exit 0 within 5 minutes, print no
# warning, and CHECK (a shell test) must hold afterwards. mmtrace logs at
# warn level only, so its stderr holds its closing summary and nothing else.
export RUST_LOG=warn
smoke() {
  name=$1 check=$2
  shift 2
  echo "mmtrace-guest: smoke $name: $* ($(cut -d' ' -f1 /proc/uptime) s)"
  timeout 300 "$@" > /tmp/$name.out 2> /tmp/$name.err
  rc=$?
  why=
  [ $rc = 0 ] || why="exit status $rc"
  [ -z "$why" ] && ! eval "$check" && why="failed check: $check"
  [ -z "$why" ] && grep -v '^mmtrace: [0-9]* events in ' /tmp/$name.err | grep -q . &&
    why="warned (stderr holds more than the closing summary)"
  {
    echo "--- $name: $*"
    echo "--- stderr:"; cat /tmp/$name.err
    echo "--- stdout ($(wc -l < /tmp/$name.out) lines), head:"; head -n 20 /tmp/$name.out
    if [ -z "$why" ]; then
      echo "smoke $name ... ok"
    else
      echo "smoke $name ... FAILED: $why"
    fi
  } | tee -a $OUT/log
  # (the pipe runs in a subshell: count outside it)
  if [ -z "$why" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}
"#,
    );
    script.push_str(
        r#"M=$MMTRACE_BIN
smoke stream-all '[ -s /tmp/stream-all.out ] && grep -q mmap /tmp/stream-all.out' \
  $M stream --faults all -- /bin/ls -l /
smoke stream-jsonl '[ -s /tmp/stream-jsonl.out ] && grep -q '"'"'"event"'"'"' /tmp/stream-jsonl.out' \
  $M stream --faults all --format jsonl -- /bin/sh -c 'ls / > /dev/null; exit 0'
smoke record '[ -s /tmp/record.json ]' \
  $M record -o /tmp/record.json -- /bin/ls -l /
smoke report '[ -s /tmp/report.out ]' \
  $M report /tmp/record.json
smoke regions '[ -s /tmp/regions.out ]' \
  $M stream --regions -- /bin/ls -l /
# --cgroup loads the cgroup walk into every program (the command's pid
# selects it too: this checks the programs load and run, and the cgroup
# its exec line names). The v1 memory hierarchy first: a controller
# active on cgroup2 cannot be mounted on v1.
mkdir -p /tmp/cgm /tmp/cg2
mount -t cgroup -o memory none /tmp/cgm && mkdir -p /tmp/cgm/mmtrace
mount -t cgroup2 none /tmp/cg2 && mkdir -p /tmp/cg2/mmtrace
smoke cgroup-v2 'grep -q '"'"'"cgroup_v2":"/mmtrace"'"'"' /tmp/cgroup-v2.out' \
  $M stream --format jsonl --events process --cgroup /tmp/cg2/mmtrace -- \
  /bin/sh -c 'echo $$ > /tmp/cg2/mmtrace/cgroup.procs && exec /bin/ls /'
smoke cgroup-v1 'grep -q '"'"'"cgroup_v1_memory":"/mmtrace"'"'"' /tmp/cgroup-v1.out' \
  $M stream --format jsonl --events process --cgroup /tmp/cgm/mmtrace -- \
  /bin/sh -c 'echo $$ > /tmp/cgm/mmtrace/cgroup.procs && exec /bin/ls /'
# Not a check: how this kernel lets the syscalls be traced.
RUST_LOG=info $M stream --events mmap -- /bin/true 2>&1 >/dev/null |
  grep 'syscalls traced' | tee -a $OUT/log
# Nor this: whether page faults and rss_stat are BTF raw tracepoints here.
RUST_LOG=tracer=debug $M stream -- /bin/true 2>&1 >/dev/null |
  grep 'raw tracepoint' | tee -a $OUT/log
# Not a check: what the model found out about this kernel's mappings.
RUST_LOG=debug $M stream --regions -- /bin/true 2>&1 >/dev/null |
  grep 'kernel probe' | tee -a $OUT/log
echo "smoke: $pass passed, $fail failed" | tee -a $OUT/log
echo $fail > $OUT/status
"#,
    );
    script
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Adds up libtest's `test result:` lines. A test that skipped itself
/// under emulation (a `skipping ...` line, see tests::skip_when_emulated)
/// is counted as skipped, not passed.
fn count_test_results(log: &str) -> Counts {
    let mut c = Counts::default();
    let emulation_skips = log
        .lines()
        .filter(|l| l.contains("(under emulation: "))
        .count() as u64;
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match what {
                "passed" => c.passed += n,
                "failed" => c.failed += n,
                "ignored" => c.ignored += n,
                _ => {}
            }
        }
    }
    let skipped = emulation_skips.min(c.passed);
    c.passed -= skipped;
    c.ignored += skipped;
    c
}

fn count_smoke_results(log: &str) -> Counts {
    let mut c = Counts::default();
    for line in log.lines() {
        if line.starts_with("smoke ") && line.ends_with(" ... ok") {
            c.passed += 1;
        } else if line.starts_with("smoke ") && line.contains(" ... FAILED") {
            c.failed += 1;
        }
    }
    c
}

// ---------------------------------------------------------------------------
// qemu
// ---------------------------------------------------------------------------

/// Boots the kernel; the console goes to our stdout and to `console`.
/// Returns whether the guest powered off within `limit` (else it is killed).
fn boot(
    files: &KernelFiles,
    initramfs: &Path,
    share: &Path,
    console: &Path,
    limit: Duration,
) -> Result<bool> {
    let virtfs = |path: &Path, tag: &str, readonly: bool| {
        format!(
            "local,path={},mount_tag={tag},security_model=none{}",
            path.display(),
            if readonly { ",readonly=on" } else { "" }
        )
    };
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max,-la57",
        "-smp",
        "1",
        "-m",
        "3G",
    ])
    .args(["-nographic", "-monitor", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(&files.vmlinuz)
    .arg("-initrd")
    .arg(initramfs)
    .args([
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
    ])
    .arg("-virtfs")
    .arg(virtfs(Path::new("/"), "hostroot", true))
    .arg("-virtfs")
    .arg(virtfs(share, "out", false))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    step(show(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {QEMU}"))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let mut log = fs::File::create(console)?;
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = log.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            print!(
                "    | {}",
                text.trim_end_matches(['\r', '\n']).to_owned() + "\n"
            );
            line.clear();
        }
        let _ = tx.send(());
    });
    let deadline = Instant::now() + limit;
    let finished = loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                step(format!("{QEMU} exited with {status}"));
            }
            break true;
        }
        if Instant::now() >= deadline {
            step(format!("time limit reached: stopping {QEMU}"));
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        let _ = rx.recv_timeout(Duration::from_millis(500));
    };
    let _ = reader.join();
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_as_the_kernel_reads_them() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz").as_deref(), Some("9p"));
        assert_eq!(
            module_name("kernel/net/9p/9pnet-virtio.ko").as_deref(),
            Some("9pnet_virtio")
        );
    }

    #[test]
    fn depends_read_from_modinfo() {
        let module = b"\x7fELF...\0license=GPL\0depends=9pnet,netfs\0intree=Y\0";
        assert_eq!(modinfo_depends(module), ["9pnet", "netfs"]);
        assert!(modinfo_depends(b"\0depends=\0name=virtio\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.file("init", b"#!/bin/sh\n", 0o755);
        let data = cpio.finish();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("TRAILER!!!"));
        assert!(text.contains("#!/bin/sh\n"));
    }

    #[test]
    fn guest_results_are_counted() {
        let log = "test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured\n\
                   test result: ok. 4 passed; 0 failed; 0 ignored\n";
        let c = count_test_results(log);
        assert_eq!((c.passed, c.failed, c.ignored), (7, 1, 2));
        let log = "smoke stream ... ok\nsmoke record ... FAILED: warned\nsmoke regions ... ok\n";
        let c = count_smoke_results(log);
        assert_eq!((c.passed, c.failed), (2, 1));
    }

    #[test]
    fn kernels_are_selected_by_version() {
        let all = select(&["all".to_string()]).unwrap();
        assert_eq!(all.len(), KERNELS.len());
        let two = select(&["6.1".to_string(), "5.10".to_string(), "6.1".to_string()]).unwrap();
        assert_eq!(
            two.iter().map(|k| k.version).collect::<Vec<_>>(),
            ["6.1", "5.10"]
        );
        assert!(select(&["6.18".to_string()]).is_err());
    }
}

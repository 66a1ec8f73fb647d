//! mmtrace's developer tasks: `cargo xtask setup | build | run | test | bench
//! | install | soak | screenshot | fuzz`.
//!
//! Every step is printed as `==> ...`; `setup` only installs what is missing,
//! so running it again (as `run` and `test` do) costs nothing. `build`,
//! `bench` and `fuzz` install nothing: they check the toolchain and name what
//! is missing.

mod compare;
mod ebpf_toolchain;
mod fuzz;
mod install;
mod kernels;
mod record_bench;
mod screenshot;
mod setup;
mod soak;

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt::Display,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// The eBPF crate only builds for bpfel-unknown-none (tracer's build.rs does
/// that); host builds, lints and tests leave it out.
pub const HOST_PACKAGES: &[&str] = &["--workspace", "--exclude", "tracer-ebpf"];

#[derive(Parser)]
#[command(about = "mmtrace developer tasks", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and running mmtrace needs (Debian's rustc-web
    /// with the BPF core, LLVM, bpf-linker, bpftool, gcc-multilib, chromium)
    /// and mount tracefs; and cargo-fuzz, for `fuzz`.
    Setup {
        /// Only print what would be installed or mounted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the toolchain (installing nothing; `setup` does), then build the
    /// workspace (tracer's build.rs builds the eBPF programs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, then run mmtrace as root with ARGS (default: `stream`).
    Run {
        /// Build and run the release binary.
        #[arg(long)]
        release: bool,
        /// Arguments for mmtrace (put them after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, build, then run the whole test suite as root. With
    /// --kernel: build, then run the root integration tests (or, with
    /// --smoke, a few mmtrace commands) on other kernels under qemu.
    Test {
        /// First check formatting, clippy and eBPF warnings (as CI does).
        #[arg(long, conflicts_with = "kernels")]
        lint: bool,
        /// Boot these kernels under qemu (5.10, 6.1, 6.12, or all; a comma
        /// list or repeated) and run the tests there instead of here.
        /// Needs `cargo xtask setup` first.
        #[arg(
            long = "kernel",
            alias = "kernels",
            value_name = "VERSION",
            value_delimiter = ','
        )]
        kernels: Vec<String>,
        /// With --kernel: only load and smoke (a few mmtrace commands that
        /// load every program), a few minutes per kernel.
        #[arg(long, requires = "kernels")]
        smoke: bool,
        /// With --kernel: the time limit for each kernel, in minutes
        /// (default 45 for the tests, 10 for the smoke).
        #[arg(long, value_name = "MINUTES", requires = "kernels")]
        timeout: Option<u64>,
    },
    /// Check the toolchain, then run the benchmarks (release build): the
    /// model's costs at different scales (fails when its goal is missed);
    /// as root, record and report a 10 s mmap/munmap loop (peak RSS, file
    /// size, report time and memory), then compare what tracing costs the
    /// traced program under mmtrace, the count-only floor, strace, perf
    /// trace and bpftrace (installing those), and write docs/BENCHMARKS.md.
    Bench {
        /// Rounds of the comparison (each runs every tracer once).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// A quick look: smaller loads, fewer mmtrace modes; prints the
        /// tables and leaves docs/BENCHMARKS.md alone.
        #[arg(long)]
        quick: bool,
        /// Only this part of the comparison (as root), printed: mmtrace's
        /// start-up and detach times, or its CPU per event. Quicker than a
        /// whole run, to measure a change; docs/BENCHMARKS.md is left alone.
        #[arg(long, value_enum)]
        only: Option<compare::Only>,
    },
    /// Build the release binary and install the daemon as a system service
    /// (as root): PREFIX/bin/mmtrace, /etc/systemd/system/mmtrace.service,
    /// /etc/mmtrace/mmtrace.toml (an existing one is kept), and the
    /// `mmtrace` group of the control socket. Enables nothing.
    Install {
        /// Where the binary goes (PREFIX/bin).
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage everything under this directory instead (for a package):
        /// no group is made, systemd is not told.
        #[arg(long, value_name = "DIR")]
        destdir: Option<PathBuf>,
    },
    /// Run the daemon under constant process churn for N minutes (root):
    /// print its resident memory and status every 30 s, then a table,
    /// written to docs/SOAK.md with the command, machine and date.
    Soak {
        /// How long, in minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Use the debug build (no release build; slower, bigger).
        #[arg(long)]
        debug: bool,
        /// Print the table only; leave docs/SOAK.md alone.
        #[arg(long)]
        no_write: bool,
    },
    /// Record the test workload (root), write its HTML report and draw it
    /// with headless Chromium into docs/report-html.png (the README's
    /// picture).
    Screenshot,
    /// Check the toolchain, then fuzz the parsers of untrusted input (cargo
    /// fuzz, libFuzzer, rustup's nightly), each target for a bounded time,
    /// with its corpus in fuzz/corpus/TARGET. Fails when an input crashes a
    /// target, and says where it was saved. Not part of `test` or CI.
    Fuzz {
        /// Seconds of fuzzing per target (0: none, to only minimise).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Then minimise each corpus, before committing it: the seeds, and
        /// within 50 KB the inputs that add the most coverage per byte.
        #[arg(long)]
        minimise: bool,
        /// The target to fuzz (default: all, one after the other).
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(fuzz::TARGETS))]
        target: Option<String>,
    },
}

fn main() {
    // Print errors without the backtrace anyhow adds under RUST_BACKTRACE.
    if let Err(err) = run_task(Cli::parse().command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run_task(task: Task) -> Result<()> {
    match task {
        Task::Setup { dry_run } => setup::setup(dry_run, true),
        Task::Build { release } => {
            setup::check()?;
            build(release)
        }
        Task::Run { release, args } => run_mmtrace(release, args),
        Task::Test {
            lint: _,
            kernels,
            smoke,
            timeout,
        } if !kernels.is_empty() => {
            let mode = if smoke {
                kernels::Mode::Smoke
            } else {
                kernels::Mode::Full
            };
            kernels::test(
                &kernels::select(&kernels)?,
                mode,
                timeout.map(|m| std::time::Duration::from_secs(m * 60)),
            )
        }
        Task::Test { lint, .. } => test(lint),
        Task::Bench {
            rounds,
            only: Some(only),
            ..
        } => {
            setup::check()?;
            if !is_root() {
                bail!("cargo xtask bench --only needs root (it loads eBPF programs)");
            }
            println!("{}", compare::only(only, rounds.max(1))?);
            Ok(())
        }
        Task::Bench { rounds, quick, .. } => {
            setup::check()?;
            // Everything runs; any failing fails the task.
            let model = if quick {
                Ok(())
            } else {
                run(cargo().args(["bench", "-p", "tracer", "--bench", "model"]))
            };
            let record = if quick {
                Ok(String::new())
            } else {
                record_bench::record_bench()
            };
            let compared = if is_root() {
                let extra = record.as_deref().unwrap_or_default();
                compare::compare(rounds.max(1), quick, extra).and_then(|figures| {
                    if quick {
                        println!("{}", figures.markdown());
                        Ok(())
                    } else {
                        figures.write()
                    }
                })
            } else {
                println!("tracer comparison: skipped (needs root)");
                Ok(())
            };
            model.and(record.map(|_| ())).and(compared)
        }
        Task::Install { prefix, destdir } => install::install(&prefix, destdir.as_deref()),
        Task::Screenshot => screenshot::screenshot(),
        Task::Soak {
            minutes,
            debug,
            no_write,
        } => soak::soak(minutes, debug, !no_write),
        Task::Fuzz {
            seconds,
            minimise,
            target,
        } => fuzz::fuzz(seconds, minimise, target.as_deref()),
    }
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.arg("build").args(HOST_PACKAGES);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn run_mmtrace(release: bool, mut args: Vec<OsString>) -> Result<()> {
    setup::setup(false, false)?;
    build(release)?;
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("mmtrace");
    if args.is_empty() {
        args.push("stream".into());
    }
    let mut cmd = as_root(&bin, "mmtrace needs root (bpf(), tracefs)")?;
    cmd.args(&args);
    step(format!("running {}", show(&cmd)));
    // exec: mmtrace gets the terminal's signals (Ctrl-C) and its exit code
    // becomes ours.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {}", bin.display()))
}

fn test(lint: bool) -> Result<()> {
    setup::setup(false, false)?;
    if lint {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs: run `cargo fmt --all`")?;
        run(cargo().arg("clippy").args(HOST_PACKAGES).args([
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
        .context("clippy found problems")?;
        run(&mut check_ebpf()?).context("the eBPF crate has warnings")?;
    }
    run(cargo().arg("build").args(HOST_PACKAGES).arg("--bins"))?;
    let bin = target_dir().join("debug").join("mmtrace");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    // The system-wide test measures the recorder people run: a debug build
    // cannot keep up with a busy machine.
    run(cargo().args(["build", "--release", "-p", "tracer", "--bin", "mmtrace"]))?;
    let release_bin = target_dir().join("release").join("mmtrace");

    let mut cmd = cargo();
    if need_sudo("the tests load eBPF programs")? {
        // Build as this user; only the test binaries run as root.
        cmd.args(["--config", "target.'cfg(all())'.runner = ['sudo', '-E']"]);
    }
    // Not --all-targets: benchmarks run only in `cargo xtask bench`.
    cmd.arg("test")
        .args(HOST_PACKAGES)
        .args(["--lib", "--bins", "--tests"])
        .env("MMTRACE_BIN", &bin)
        .env("MMTRACE_RELEASE_BIN", &release_bin)
        .env("MMTRACE_TESTS_REQUIRE_ROOT", "1");
    let (passed, failed, ignored) = run_counting_tests(&mut cmd)?;
    // One closing line for the whole suite (cargo prints one per binary).
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    step(if lint {
        "lints, build and tests passed"
    } else {
        "build and tests passed"
    });
    Ok(())
}

/// Runs `cargo test`, showing its output as it comes, and adds up the
/// `test result:` lines of every test binary.
fn run_counting_tests(cmd: &mut Command) -> Result<(u64, u64, u64)> {
    use std::io::{BufRead, BufReader};
    step(show(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed, ignored))
}

/// `cargo check` of the eBPF crate for its real target with warnings denied
/// (clippy cannot: rustup's clippy has no `core` for bpfel-unknown-none), on
/// the route tracer/build.rs takes. The flags match tracer/build.rs; a
/// separate target dir keeps its cache intact.
fn check_ebpf() -> Result<Command> {
    let flags = format!(
        "--cfg=bpf_target_arch=\"{}\" --check-cfg=cfg(bpf_target_arch,values(any())) -Dwarnings",
        env::consts::ARCH
    );
    let choice = ebpf_toolchain::choose().map_err(anyhow::Error::msg)?;
    let mut cmd = match &choice.route {
        ebpf_toolchain::Route::Debian => {
            let mut cmd = cargo();
            cmd.arg("check")
                .env("RUSTC", ebpf_toolchain::DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1");
            cmd
        }
        ebpf_toolchain::Route::Nightly(toolchain) => {
            let rustup = ebpf_toolchain::find_tool("rustup").context("rustup not found")?;
            let mut cmd = Command::new(rustup);
            cmd.current_dir(workspace_root())
                .args(["run", toolchain, "cargo", "check", "-Z", "build-std=core"])
                .env_remove("RUSTC");
            cmd
        }
    };
    cmd.args(["--release", "--target", ebpf_toolchain::BPF_TARGET])
        .args(["--package", "tracer-ebpf", "--target-dir"])
        .arg(target_dir().join("bpf-lint"))
        .env("RUSTFLAGS", flags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    Ok(cmd)
}

// ---------------------------------------------------------------------------
// Helpers shared with setup.rs
// ---------------------------------------------------------------------------

pub fn step(msg: impl Display) {
    println!("==> {msg}");
}

/// Prints the command, runs it with inherited stdio, and fails if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    step(show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", cmd.get_program().display()))?;
    if !status.success() {
        let name = Path::new(cmd.get_program()).file_name().unwrap_or_default();
        let first = cmd.get_args().next().unwrap_or_default();
        bail!("`{} {}` failed ({status})", name.display(), first.display());
    }
    Ok(())
}

/// Stdout of a command that succeeded, or None.
pub fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command line as a shell would take it, with the variables it sets.
pub fn show(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$*;&|".contains(c)) {
            format!("'{}'", s.replace('\'', r"'\''"))
        } else {
            s.into_owned()
        }
    };
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))));
    // Our own cargo is shown as plain `cargo`.
    let program = match cmd.get_program() {
        p if env::var_os("CARGO").as_deref() == Some(p) => "cargo".to_string(),
        p => quote(p),
    };
    envs.chain([program])
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn is_root() -> bool {
    stdout_of(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// Finds an executable in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Whether a command that needs root must go through `sudo -E`; fails with
/// `why` when we are not root and there is no sudo.
pub fn need_sudo(why: &str) -> Result<bool> {
    if is_root() {
        return Ok(false);
    }
    if which("sudo").is_none() {
        bail!("{why}, but this is not root and sudo is not installed: run it as root");
    }
    Ok(true)
}

/// `program`, run as root.
pub fn as_root(program: impl AsRef<OsStr>, why: &str) -> Result<Command> {
    if !need_sudo(why)? {
        return Ok(Command::new(program));
    }
    let mut cmd = Command::new("sudo");
    cmd.arg("-E").arg(program);
    Ok(cmd)
}

/// The cargo that runs us (rustup's), in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn workspace_root() -> &'static Path {
    // xtask lives in the workspace's root directory.
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask)
}

pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn cargo_home() -> PathBuf {
    ebpf_toolchain::cargo_home().unwrap_or_else(|| PathBuf::from(".cargo"))
}

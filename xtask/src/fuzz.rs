//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` (cargo fuzz,
//! libFuzzer) on the parsers of untrusted input, each for a bounded time,
//! and with `--minimise` keeps each corpus small enough to commit.
//!
//! Installs nothing: like `build` and `bench` it checks and names what is
//! missing (`cargo xtask setup` installs cargo-fuzz; the nightly toolchain
//! comes from rustup). Not part of `test` or CI: it is bounded in time but
//! keeps a core busy all along.

use std::{
    collections::{BTreeMap, BinaryHeap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::SystemTime,
};

use anyhow::{bail, Context, Result};

use crate::{
    ebpf_toolchain::{self, NIGHTLY},
    run, setup, show, stdout_of, step, workspace_root,
};

/// The fuzz targets (fuzz/fuzz_targets/TARGET.rs), in the order they run.
pub const TARGETS: &[&str] = &["decode", "timeline", "report", "maps"];

/// What minimising keeps of a corpus besides its seeds, at most: the
/// corpus is committed.
const CORPUS_BUDGET: u64 = 50_000;

/// Fuzzes `target` (default: every target) for `seconds` each (0: not at
/// all), with the corpus in fuzz/corpus/TARGET; `minimise` then minimises
/// each corpus. Fails when an input crashed a target, naming where libFuzzer
/// saved it.
pub fn fuzz(seconds: u64, minimise: bool, target: Option<&str>) -> Result<()> {
    check()?;
    let targets: Vec<&str> = match target {
        Some(target) => vec![target],
        None => TARGETS.to_vec(),
    };
    let mut crashes = Vec::new();
    for target in targets {
        let corpus = Path::new("fuzz").join("corpus").join(target);
        // libFuzzer wants the directory; a new target starts from nothing.
        fs::create_dir_all(workspace_root().join(&corpus))
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        if seconds > 0 {
            crashes.extend(run_target(target, &corpus, seconds)?);
        }
        if minimise {
            minimise_corpus(target, &corpus)?;
        }
    }
    if !crashes.is_empty() {
        bail!(
            "{} crashing input(s): {}",
            crashes.len(),
            crashes.join(", ")
        );
    }
    Ok(())
}

/// Runs one target for `seconds`; returns the inputs that failed it, if
/// any.
fn run_target(target: &str, corpus: &Path, seconds: u64) -> Result<Vec<String>> {
    let mut crashes = Vec::new();
    let before = artifacts(target);
    let mut cmd = cargo_fuzz()?;
    cmd.args(["run", target]).arg(corpus).arg("--").args([
        format!("-max_total_time={seconds}"),
        // An input slower than this is a bug too (it would stall mmtrace).
        "-timeout=10".to_string(),
        "-print_final_stats=1".to_string(),
    ]);
    let dict = Path::new("fuzz")
        .join("dict")
        .join(format!("{target}.dict"));
    if workspace_root().join(&dict).is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    step(format!(
        "fuzz {target}: {seconds} s, corpus {}",
        corpus.display()
    ));
    step(show(&cmd));
    let status = cmd.status().context("cannot start cargo fuzz")?;
    if status.success() {
        step(format!("fuzz {target}: no crash in {seconds} s"));
    } else {
        // New files, or old ones written again (the name is the input's
        // hash).
        let new: Vec<PathBuf> = artifacts(target)
            .into_iter()
            .filter(|(path, modified)| before.get(path) != Some(modified))
            .map(|(path, _)| path)
            .collect();
        if new.is_empty() {
            bail!("`cargo fuzz run {target}` failed ({status}) and saved no input: see above");
        }
        for input in new {
            let input = input.strip_prefix(workspace_root()).unwrap_or(&input);
            step(format!(
                "fuzz {target}: FAILED, the input is saved in {}; reproduce with \
                 `cargo +nightly fuzz run {target} {}`",
                input.display(),
                input.display()
            ));
            crashes.push(format!("{target}: {}", input.display()));
        }
    }
    Ok(crashes)
}

/// Minimises a corpus as `cargo fuzz cmin` does, with libFuzzer's merge,
/// but keeps the `seed-*` files under their names and at most
/// [`CORPUS_BUDGET`] bytes of the other inputs: those that add the most
/// coverage per byte (edges first, then libFuzzer's finer features).
fn minimise_corpus(target: &str, corpus: &Path) -> Result<()> {
    let root = workspace_root();
    let dir = root.join(corpus);
    run(cargo_fuzz()?.args(["build", target]))?;
    let rustup = ebpf_toolchain::find_tool("rustup").context("rustup not found")?;
    let host = stdout_of(Command::new(rustup).args(["run", NIGHTLY, "rustc", "-vV"]))
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .context("cannot read the host triple from `rustc -vV`")?;
    let fuzzer = root
        .join("fuzz/target")
        .join(host)
        .join("release")
        .join(target);
    // Merging into an empty directory runs every input once and records
    // what each covers in the control file.
    let work = root.join("fuzz/target/minimise").join(target);
    let _ = fs::remove_dir_all(&work);
    let merged = work.join("merged");
    fs::create_dir_all(&merged).with_context(|| format!("cannot create {}", merged.display()))?;
    let control = work.join("control");
    let mut cmd = Command::new(&fuzzer);
    cmd.current_dir(root)
        .arg("-merge=1")
        .arg(format!("-merge_control_file={}", control.display()))
        .arg(&merged)
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    step(format!("minimise {target}: {}", show(&cmd)));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", fuzzer.display()))?;
    if !status.success() {
        bail!("the merge of {} failed ({status})", corpus.display());
    }
    let text = fs::read_to_string(&control)
        .with_context(|| format!("cannot read {}", control.display()))?;
    let inputs = parse_control(&text).context("libFuzzer's merge control file has another form")?;

    let is_seed = |input: &Input| {
        input
            .path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("seed-"))
    };
    let (mut kept, others): (Vec<&Input>, Vec<&Input>) = inputs.iter().partition(|i| is_seed(i));
    let mut edges: HashSet<u32> = kept.iter().flat_map(|i| i.edges.iter().copied()).collect();
    let mut features: HashSet<u32> = kept
        .iter()
        .flat_map(|i| i.features.iter().copied())
        .collect();
    // Greedy by gain per byte; a gain only shrinks as more is kept, so an
    // input whose gain, computed again, still beats the next best is the
    // best (lazy greedy).
    let gain = |i: &Input, edges: &HashSet<u32>, features: &HashSet<u32>| {
        let new_edges = i.edges.iter().filter(|e| !edges.contains(e)).count() as u64;
        let new_features = i.features.iter().filter(|f| !features.contains(f)).count() as u64;
        (10 * new_edges + new_features) * 1_000_000 / i.size.max(64)
    };
    let mut queue: BinaryHeap<(u64, usize)> = others
        .iter()
        .enumerate()
        .map(|(n, i)| (gain(i, &edges, &features), n))
        .collect();
    let mut used = 0;
    while let Some((score, n)) = queue.pop() {
        let input = others[n];
        if score == 0 {
            break;
        }
        if used + input.size > CORPUS_BUDGET {
            continue;
        }
        let now = gain(input, &edges, &features);
        if queue.peek().is_some_and(|&(next, _)| now < next) {
            queue.push((now, n));
            continue;
        }
        if now == 0 {
            continue;
        }
        used += input.size;
        edges.extend(input.edges.iter().copied());
        features.extend(input.features.iter().copied());
        kept.push(input);
    }

    let keep: HashSet<&Path> = kept.iter().map(|i| i.path.as_path()).collect();
    let mut removed = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if !keep.contains(path.as_path()) {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed += 1;
        }
    }
    let all_edges: HashSet<u32> = inputs
        .iter()
        .flat_map(|i| i.edges.iter().copied())
        .collect();
    step(format!(
        "minimise {target}: kept {} inputs ({} bytes besides the seeds), removed {removed}; \
         they cover {} of the {} edges the corpus covered",
        kept.len(),
        used,
        edges.len(),
        all_edges.len()
    ));
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// One input of a merge: its path, size and what it covers.
struct Input {
    path: PathBuf,
    size: u64,
    edges: Vec<u32>,
    features: Vec<u32>,
}

/// libFuzzer's merge control file: the number of inputs, the number in the
/// first directory, their paths, then `STARTED i size`, `FT i features...`
/// and `COV i edges...` lines (an input that crashed has no FT nor COV).
fn parse_control(text: &str) -> Option<Vec<Input>> {
    let mut lines = text.lines();
    let count: usize = lines.next()?.trim().parse().ok()?;
    let _first: usize = lines.next()?.trim().parse().ok()?;
    let mut inputs: Vec<Input> = Vec::with_capacity(count);
    for _ in 0..count {
        inputs.push(Input {
            path: PathBuf::from(lines.next()?),
            size: 0,
            edges: Vec::new(),
            features: Vec::new(),
        });
    }
    for line in lines {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(index)) = (words.next(), words.next()) else {
            continue;
        };
        let input = inputs.get_mut(index.parse::<usize>().ok()?)?;
        let numbers = words
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        match kind {
            "STARTED" => input.size = *numbers.first()?,
            "FT" => input.features = numbers.iter().map(|&n| n as u32).collect(),
            "COV" => input.edges = numbers.iter().map(|&n| n as u32).collect(),
            _ => {}
        }
    }
    Some(inputs)
}

/// Everything the fuzzing needs: the build's toolchain (tracer's build.rs
/// builds the eBPF programs), a nightly with its sanitizer runtimes, and
/// cargo-fuzz.
fn check() -> Result<()> {
    setup::check()?;
    let missing = setup::fuzz_tools_missing();
    if missing.is_empty() {
        step("fuzzing: cargo-fuzz and rustup's nightly are installed");
        return Ok(());
    }
    for item in &missing {
        step(format!("fuzzing: missing {item}"));
    }
    bail!(
        "cannot fuzz (missing: {}): run `cargo xtask setup` first",
        missing.join("; ")
    )
}

/// `rustup run nightly cargo fuzz`, in the workspace root (cargo fuzz finds
/// fuzz/ there).
fn cargo_fuzz() -> Result<Command> {
    let rustup = ebpf_toolchain::find_tool("rustup").context("rustup not found")?;
    let mut cmd = Command::new(rustup);
    cmd.current_dir(workspace_root())
        .args(["run", NIGHTLY, "cargo", "fuzz"]);
    Ok(cmd)
}

/// The files in fuzz/artifacts/TARGET, where libFuzzer saves crashing,
/// leaking, slow and out-of-memory inputs (crash-*, leak-*, timeout-*,
/// oom-*), with their modification times.
fn artifacts(target: &str) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let dir = workspace_root().join("fuzz").join("artifacts").join(target);
    fs::read_dir(dir)
        .map(|dir| {
            dir.flatten()
                .map(|entry| {
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    (entry.path(), modified)
                })
                .collect()
        })
        .unwrap_or_default()
}

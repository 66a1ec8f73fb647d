//! Hook stage: loads the kernel programs with the filter and offsets they
//! need, attaches the ones the chosen events require, and owns their maps.
//! Dropping [`Hooks`] detaches everything.

pub mod btf;
pub mod cgroup;
pub mod clock;
pub mod plan;
pub mod preflight;
pub mod proc;
pub mod ring;
pub mod tracefs;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    time::Instant,
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, FEntry, FExit, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use log::{debug, info};
use tracer_common::{
    Config, Duty, EventKind, FaultCounts, Fexit, MmSeq, Source, Tracepoint, CGROUP_V1_MEMORY,
    CGROUP_V2, COMM_LEN, ERRORS_NO_KIND, FAULTS_ALL, FAULTS_OFF, FILTER_CGROUP_V1_MEMORY,
    FILTER_CGROUP_V2, FILTER_COMM, FILTER_FOLLOW, FILTER_PID, KIND_SLOTS, MAP_CGROUP_FILTER,
    MAP_COMM_FILTER, MAP_ERRORS, MAP_EVENTS, MAP_FAULT_COUNTS, MAP_LOST, MAP_MM_SEQ,
    MAP_PID_FILTER, MAP_RSS, MAP_RUNTIME, RSS_MEMBERS, STACK_SOURCE_FAULT, STACK_SOURCE_FEXIT,
    TP_RSS_STAT, TP_SCHED_PROCESS_EXIT,
};

use self::tracefs::{tracepoint_exists, TRACEFS};

/// The compiled kernel programs, embedded at build time.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Set to 1, the kernel programs say why they gave up on an event (besides
/// counting it), forwarded to the log at debug level (target
/// `tracer_ebpf`).
pub const KERNEL_LOG_ENV: &str = "MMTRACE_KERNEL_LOG";
/// aya-log-ebpf's ring buffer of log records.
const AYA_LOGS: &str = "AYA_LOGS";

/// Whether the kernel diagnostics are asked for ([`KERNEL_LOG_ENV`]).
pub fn kernel_log_wanted() -> bool {
    std::env::var_os(KERNEL_LOG_ENV).is_some_and(|v| v == "1")
}

/// For testing: event kinds (names, comma-separated) left out of the
/// kernel while the model runs, so that the changes they make go unseen,
/// as a call mmtrace does not know would. The model must find out by
/// itself (the kernel's counters, checks with /proc).
pub const UNHOOK_ENV: &str = "MMTRACE_UNHOOK";

/// The kinds [`UNHOOK_ENV`] names (EventKind bits); an unknown name is an
/// error.
pub fn unhooked_kinds() -> std::result::Result<u32, String> {
    let Some(v) = std::env::var_os(UNHOOK_ENV) else {
        return Ok(0);
    };
    let v = v.to_string_lossy();
    let mut mask = 0;
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("{UNHOOK_ENV}: no event kind {name:?}"))?;
        mask |= kind.bit();
    }
    Ok(mask)
}

/// What to hook and how.
#[derive(Clone, Debug)]
pub struct HookConfig {
    /// EventKind::bit() of the kinds to emit.
    pub kind_mask: u32,
    /// FAULTS_*.
    pub fault_mode: u32,
    /// Processes to trace (tgids); empty with `comms` empty: everything.
    pub pids: Vec<u32>,
    /// Trace processes whose comm is one of these.
    pub comms: Vec<Vec<u8>>,
    /// Trace processes in these cgroups or below them (`--cgroup`).
    pub cgroups: Vec<cgroup::Selected>,
    /// Filter by pid even while `pids` is empty (a command is about to be
    /// added), and add the children of traced processes at fork.
    pub follow: bool,
    pub pid_filter: bool,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub buffer_bytes: u32,
    /// Keep each traced process's RSS counters from kmem:rss_stat.
    pub track_rss: bool,
    /// Records carry their address space's counters (`MmCounters`).
    pub mm_counters: bool,
}

/// Where stack growth events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackPath {
    Fexit,
    FaultFallback,
    Off,
}

impl StackPath {
    /// As the timeline's `stack_source` names it.
    pub const fn name(self) -> &'static str {
        match self {
            StackPath::Fexit => "fexit",
            StackPath::FaultFallback => "fault",
            StackPath::Off => "off",
        }
    }
}

pub struct Hooks {
    ebpf: Ebpf,
    pub stack_path: StackPath,
    /// Syscalls that can be are traced at their exit alone
    /// (`Syscall::exit_alone`).
    pub exit_alone: bool,
    /// CLOCK_MONOTONIC just before the first program was attached.
    pub attached_ns: u64,
    /// Lost counts already reported, per kind.
    lost_seen: [u64; KIND_SLOTS],
    /// Error counts already reported, per slot (kind, or ERRORS_NO_KIND).
    errors_seen: [u64; KIND_SLOTS],
    /// The tracepoint links, to detach them all at once on drop.
    tp_links: Vec<(&'static str, TracePointLinkId)>,
    /// The BTF raw tracepoints loaded (`Tracepoint::btf_prog`), by
    /// program, and those the kernel refused.
    btf_loaded: Vec<&'static str>,
    btf_refused: Vec<&'static str>,
    /// Their links (detached without a grace period's wait).
    btf_links: Vec<(&'static str, BtfTracePointLinkId)>,
    /// Runs the kernel skipped already reported, per program.
    misses_seen: BTreeMap<&'static str, u64>,
    /// When the programs' fdinfo was last read for them.
    misses_read: Option<Instant>,
}

/// The skipped runs are read this often at most: a read is one small file
/// per program (about 40), too many for every tick.
const MISSES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Detaching a tracepoint waits for an RCU grace period: 3.1 s for all of
/// them one by one on the development machine. The links are closed at
/// once, each on its own thread, so the waits overlap where the kernel
/// lets them (1.6 s there: it serialises part of the unregistration). The
/// rest (programs, maps, fexit links) goes with `ebpf`.
impl Drop for Hooks {
    fn drop(&mut self) {
        let mut links = Vec::with_capacity(self.tp_links.len());
        for (prog, id) in std::mem::take(&mut self.tp_links) {
            if let Ok(link) = self.tracepoint(prog).and_then(|tp| Ok(tp.take_link(id)?)) {
                links.push(link);
            }
        }
        std::thread::scope(|s| {
            for link in links {
                // Without a thread, the link is closed right here (the
                // closure is dropped with the error).
                let _ = std::thread::Builder::new()
                    .name("mmtrace-detach".into())
                    .spawn_scoped(s, move || drop(link));
            }
        });
    }
}

impl Hooks {
    /// Loads and attaches. Nothing stays attached if this fails.
    pub fn load(cfg: &HookConfig) -> Result<Hooks> {
        // aya 0.14's EbpfLoader::new() parses the kernel's BTF for
        // relocations (unconditionally, in the constructor, with no way to
        // hand it ours or take its copy back), and the fexit and BTF raw
        // tracepoint loads need one of aya's (page faults, which the
        // stack's fallback uses too); mmtrace's own reader resolves the
        // offsets. The three
        // parses run at once, each on its own thread: they took 150-300
        // ms one after the other.
        let started = Instant::now();
        let aya_btf_wanted = cfg.kind_mask & (EventKind::Stack.bit() | EventKind::Fault.bit()) != 0;
        let (loader, aya_btf, resolved) = std::thread::scope(|s| {
            let spawn = |name: &str| std::thread::Builder::new().name(name.into());
            let loader = spawn("mmtrace-btf").spawn_scoped(s, EbpfLoader::new);
            let aya_btf = aya_btf_wanted.then(|| {
                spawn("mmtrace-btf2").spawn_scoped(s, || {
                    aya::Btf::from_sys_fs()
                        .with_context(|| format!("cannot parse {}", btf::VMLINUX_BTF))
                })
            });
            let resolved = (|| -> Result<_> {
                let vmlinux = btf::read_vmlinux()?;
                let parsed = btf::Btf::parse(&vmlinux)
                    .with_context(|| format!("cannot parse {}", btf::VMLINUX_BTF))?;
                let mut offsets = btf::resolve_offsets(&parsed)?;
                if !cfg.cgroups.is_empty() {
                    btf::resolve_cgroup_offsets(&parsed, &mut offsets).map_err(|e| {
                        anyhow!("--cgroup: this kernel cannot be asked for a task's cgroup ({e})")
                    })?;
                }
                Ok((offsets, btf::resolve_vma_offsets(&parsed)))
            })();
            // Without a thread (or if it panicked), here.
            let loader = loader
                .ok()
                .and_then(|h| h.join().ok())
                .unwrap_or_else(EbpfLoader::new);
            let aya_btf = aya_btf.map(|h| {
                h.ok().and_then(|h| h.join().ok()).unwrap_or_else(|| {
                    aya::Btf::from_sys_fs()
                        .with_context(|| format!("cannot parse {}", btf::VMLINUX_BTF))
                })
            });
            (loader, aya_btf, resolved)
        });
        let (offsets, vma_offsets) = resolved?;
        debug!(
            "start-up: kernel BTF read and parsed in {} ms",
            started.elapsed().as_millis()
        );
        let mut filter = 0;
        if cfg.pid_filter || !cfg.pids.is_empty() {
            filter |= FILTER_PID;
        }
        if !cfg.comms.is_empty() {
            filter |= FILTER_COMM;
        }
        if cfg.follow {
            filter |= FILTER_FOLLOW;
        }
        for c in &cfg.cgroups {
            filter |= match c.hierarchy {
                cgroup::Hierarchy::V2 => FILTER_CGROUP_V2,
                cgroup::Hierarchy::V1Memory => FILTER_CGROUP_V1_MEMORY,
            };
        }
        let config = Config {
            self_tgid: std::process::id(),
            filter,
            kind_mask: cfg.kind_mask,
            fault_mode: cfg.fault_mode,
            // Wake the reader once a quarter of the buffer is waiting; it
            // polls every few milliseconds for the rest.
            wakeup_bytes: u64::from(cfg.buffer_bytes / 4),
            exit_group_dead_offset: exit_group_dead_offset().unwrap_or(0),
            track_rss: u32::from(cfg.track_rss),
            diagnostics: u32::from(kernel_log_wanted()),
            mm_counters: u32::from(cfg.mm_counters),
        };
        let mut loader = loader;
        loader
            .override_global("CONFIG", &config, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("VMA_OFFSETS", &vma_offsets, true)
            .map_max_entries(MAP_EVENTS, cfg.buffer_bytes);
        if config.diagnostics == 0 {
            // Nothing is logged: the smallest ring buffer will do.
            loader.map_max_entries(AYA_LOGS, page_size());
        }
        let started = Instant::now();
        let mut ebpf = loader
            .load(PROGRAMS)
            .context("cannot load mmtrace's kernel programs")?;
        debug!(
            "start-up: object and maps loaded in {} ms",
            started.elapsed().as_millis()
        );
        if config.diagnostics != 0 {
            // Before any program is loaded: they refer to the log's map.
            forward_kernel_log(&mut ebpf)?;
            info!("kernel diagnostics on ({KERNEL_LOG_ENV}=1): logged at debug level");
        }

        let mut hooks = Hooks {
            ebpf,
            stack_path: StackPath::Off,
            exit_alone: false,
            attached_ns: 0,
            lost_seen: [0; KIND_SLOTS],
            misses_seen: BTreeMap::new(),
            misses_read: None,
            errors_seen: [0; KIND_SLOTS],
            tp_links: Vec::new(),
            btf_loaded: Vec::new(),
            btf_refused: Vec::new(),
            btf_links: Vec::new(),
        };
        for pid in &cfg.pids {
            hooks.add_pid(*pid)?;
        }
        {
            let mut comms: HashMap<_, [u8; COMM_LEN], u8> = HashMap::try_from(
                hooks
                    .ebpf
                    .map_mut(MAP_COMM_FILTER)
                    .context("COMM_FILTER map")?,
            )?;
            for comm in &cfg.comms {
                comms.insert(comm_key(comm), 1, 0)?;
            }
        }
        if !cfg.cgroups.is_empty() {
            let mut cgroups: HashMap<_, [u64; 2], u8> = HashMap::try_from(
                hooks
                    .ebpf
                    .map_mut(MAP_CGROUP_FILTER)
                    .context("CGROUP_FILTER map")?,
            )?;
            for c in &cfg.cgroups {
                let hierarchy = match c.hierarchy {
                    cgroup::Hierarchy::V2 => CGROUP_V2,
                    cgroup::Hierarchy::V1Memory => CGROUP_V1_MEMORY,
                };
                cgroups.insert([hierarchy, c.id], 1, 0).with_context(|| {
                    format!("cannot add cgroup {} to the filter", c.dir.display())
                })?;
            }
        }

        let mut wanted = cfg.kind_mask;
        if cfg.fault_mode == FAULTS_OFF {
            // Faults are neither streamed nor counted.
            wanted &= !EventKind::Fault.bit();
        }
        // Load (verify) everything first: it is slow, and nothing is
        // attached meanwhile, so the stream's time can start at the attach.
        let mut fexit_loaded = 0;
        let stack = EventKind::Stack;
        if let (true, Source::Fexit(fexit)) = (wanted & stack.bit() != 0, stack.info().source) {
            let started = Instant::now();
            let loaded = match &aya_btf {
                Some(Ok(btf)) => hooks.load_fexit(&fexit, btf),
                Some(Err(e)) => Err(anyhow!("{e:#}")),
                None => Err(anyhow!("the kernel's BTF was not read")),
            };
            debug!(
                "start-up: fexit attempt took {} ms",
                started.elapsed().as_millis()
            );
            hooks.stack_path = match loaded {
                Ok(()) => {
                    fexit_loaded |= stack.bit();
                    StackPath::Fexit
                }
                Err(e) => {
                    info!(
                        "stack growth: no fexit on {} here ({}); using the fault-based path",
                        fexit.function,
                        e.root_cause()
                    );
                    StackPath::FaultFallback
                }
            };
            let mode = match hooks.stack_path {
                StackPath::Fexit => STACK_SOURCE_FEXIT,
                _ => STACK_SOURCE_FAULT,
            };
            let mut runtime: Array<_, u32> =
                Array::try_from(hooks.ebpf.map_mut(MAP_RUNTIME).context("RUNTIME map")?)?;
            runtime.set(0, mode, 0)?;
        }
        let mut duties = Vec::new();
        if filter & FILTER_FOLLOW != 0 {
            duties.push(Duty::FollowChildren);
        }
        if filter & FILTER_PID != 0 {
            duties.push(Duty::ForgetExited);
        }
        if cfg.track_rss {
            duties.push(Duty::TrackRss);
        }
        // Without counters in flight (no model), a syscall that can be is
        // traced at its exit alone, its arguments read from the caller's
        // saved registers: half the programs per call. The helper that
        // finds the registers came with 5.15; where the kernel refuses those
        // programs, the pairs are loaded instead.
        let mut exit_alone = !cfg.mm_counters && cfg!(target_arch = "x86_64");
        let plan = loop {
            let plan = Self::plan(wanted, &duties, fexit_loaded, exit_alone)?;
            let started = Instant::now();
            if let Some(Ok(btf)) = &aya_btf {
                // rss_stat's reads no record: the RSS counters need its
                // tracepoint program.
                let tps: Vec<_> = plan
                    .tracepoints
                    .iter()
                    .copied()
                    .filter(|tp| !(cfg.track_rss && **tp == TP_RSS_STAT))
                    .collect();
                hooks.load_btf_variants(&tps, btf);
            }
            let perf: Vec<_> = plan
                .tracepoints
                .iter()
                .copied()
                .filter(|tp| !tp.btf_prog.is_some_and(|p| hooks.btf_loaded.contains(&p)))
                .collect();
            match hooks.load_tracepoints(&perf) {
                Ok(()) => {
                    debug!(
                        "start-up: {} programs verified in {} ms",
                        plan.tracepoints.len(),
                        started.elapsed().as_millis()
                    );
                    break plan;
                }
                Err(e) if exit_alone && format!("{e}").ends_with("_alone") => {
                    info!("syscalls traced at enter and exit ({e})");
                    debug!("{e:#}");
                    exit_alone = false;
                }
                Err(e) => return Err(e),
            }
        };
        hooks.exit_alone = exit_alone;
        if exit_alone {
            info!("syscalls traced at their exit alone");
        }
        let started = Instant::now();

        hooks.attached_ns = clock::monotonic_ns();
        if let (StackPath::Fexit, Source::Fexit(fexit)) = (hooks.stack_path, stack.info().source) {
            for prog in [fexit.entry_prog, fexit.exit_prog] {
                hooks.attach_tracing(prog)?;
            }
            info!("stack growth: fentry/fexit on {}", fexit.function);
        }
        // A syscall's exit before its enter: a call entered is then always
        // seen leaving (a call counted in flight in MM_SEQ and never counted
        // out would leave its address space's counters unsettled).
        let (exits, others): (Vec<&&Tracepoint>, Vec<_>) = plan
            .tracepoints
            .iter()
            .partition(|tp| tp.name.starts_with("sys_exit_"));
        for tp in exits.into_iter().chain(others) {
            match tp.btf_prog.filter(|p| hooks.btf_loaded.contains(p)) {
                Some(prog) => hooks.attach_btf(prog)?,
                None => hooks.attach_tracepoint(tp)?,
            }
        }
        debug!(
            "start-up: {} programs attached in {} ms",
            plan.tracepoints.len(),
            started.elapsed().as_millis()
        );
        if cfg.fault_mode == FAULTS_ALL {
            info!("streaming every page fault");
        }
        Ok(hooks)
    }

    /// The plan, with each tracepoint checked against this kernel's
    /// format.
    fn plan(
        wanted: u32,
        duties: &[Duty],
        fexit_loaded: u32,
        exit_alone: bool,
    ) -> Result<plan::Plan> {
        let plan = plan::plan(wanted, duties, fexit_loaded, exit_alone, |tp| {
            tracepoint_exists(tp.category, tp.name)
        })
        .map_err(|plan::Missing(tp)| {
            anyhow!(
                "this kernel has no tracepoint {}:{} (looked in {TRACEFS}/events)",
                tp.category,
                tp.name
            )
        })?;
        for (kind, tp) in &plan.skipped {
            info!(
                "no {} events: this kernel has no tracepoint {}:{} (nor, then, the syscall)",
                kind.name(),
                tp.category,
                tp.name
            );
        }
        // The programs read their records through fixed structs: they must
        // fit this kernel's formats.
        for tp in &plan.tracepoints {
            let format = tracefs::read_format(tp.category, tp.name).with_context(|| {
                format!(
                    "cannot read the format of tracepoint {}:{}",
                    tp.category, tp.name
                )
            })?;
            tracefs::check_layout(tp, &format)?;
        }
        Ok(plan)
    }

    fn tracepoint(&mut self, prog: &str) -> Result<&mut TracePoint> {
        Ok(self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?)
    }

    /// Loads the programs of `tps`, several at once: the kernel verifies
    /// each in its own `bpf()` call, which takes most of the start-up (up
    /// to hundreds of milliseconds for a syscall's exit), on one CPU. One
    /// thread per CPU takes the next program until none is left. An error
    /// names its program, with the verifier's log when it refused it; the
    /// first in `tps`'s order is returned.
    fn load_tracepoints(&mut self, tps: &[&Tracepoint]) -> Result<()> {
        let mut wanted: BTreeMap<&str, Option<&mut TracePoint>> =
            tps.iter().map(|tp| (tp.prog, None)).collect();
        for (name, prog) in self.ebpf.programs_mut() {
            if let Some(slot) = wanted.get_mut(name) {
                let prog: &mut TracePoint = prog.try_into()?;
                // Loaded by an earlier plan that failed elsewhere.
                if prog.fd().is_ok() {
                    wanted.remove(name);
                } else {
                    *slot = Some(prog);
                }
            }
        }
        let mut queue = Vec::with_capacity(tps.len());
        let mut missing = None;
        for tp in tps {
            if !wanted.contains_key(tp.prog) {
                continue;
            }
            match wanted.get_mut(tp.prog).and_then(Option::take) {
                Some(prog) => queue.push((tp.prog, prog)),
                // Listed twice, or not in the object.
                None if missing.is_none() => missing = Some(tp.prog),
                None => {}
            }
        }
        if let Some(prog) = missing {
            return Err(anyhow!("program {prog} missing from the object"));
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(queue.len())
            .max(1);
        // Taken from the front: in the plan's order.
        queue.reverse();
        let queue = std::sync::Mutex::new(queue);
        let failed = std::sync::Mutex::new(Vec::new());
        let work = || loop {
            let next = queue.lock().map(|mut q| q.pop()).ok().flatten();
            let Some((name, prog)) = next else { break };
            if let Err(e) = prog.load() {
                if let Ok(mut failed) = failed.lock() {
                    failed.push((name, e));
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                // Without a thread, the others (and this one) do its share.
                let _ = std::thread::Builder::new()
                    .name("mmtrace-load".into())
                    .spawn_scoped(s, work);
            }
            work();
        });
        let mut failed = failed.into_inner().unwrap_or_default();
        failed.sort_by_key(|(name, _)| tps.iter().position(|tp| tp.prog == *name));
        match failed.into_iter().next() {
            Some((name, e)) => {
                Err(anyhow::Error::new(e).context(format!("the kernel refused program {name}")))
            }
            None => Ok(()),
        }
    }

    /// Loads the BTF raw tracepoint variants of `tps` not tried yet; one
    /// the kernel refuses is left for its tracepoint program.
    fn load_btf_variants(&mut self, tps: &[&Tracepoint], btf: &aya::Btf) {
        for tp in tps {
            let Some(prog) = tp.btf_prog else { continue };
            if self.btf_loaded.contains(&prog) || self.btf_refused.contains(&prog) {
                continue;
            }
            let loaded = match self.ebpf.program_mut(prog) {
                Some(aya::programs::Program::BtfTracePoint(p)) => {
                    p.load(tp.name, btf).map_err(anyhow::Error::from)
                }
                _ => Err(anyhow!("program {prog} is not a BTF raw tracepoint")),
            };
            match loaded {
                Ok(()) => {
                    debug!("{}:{}: a BTF raw tracepoint ({prog})", tp.category, tp.name);
                    self.btf_loaded.push(prog);
                }
                Err(e) => {
                    info!(
                        "{}:{}: the kernel refused its BTF raw tracepoint ({}); using the \
                         tracepoint program",
                        tp.category,
                        tp.name,
                        e.root_cause()
                    );
                    self.btf_refused.push(prog);
                }
            }
        }
    }

    fn attach_btf(&mut self, prog: &'static str) -> Result<()> {
        let id = match self.ebpf.program_mut(prog) {
            Some(aya::programs::Program::BtfTracePoint(p)) => p
                .attach()
                .with_context(|| format!("cannot attach BTF raw tracepoint {prog}"))?,
            _ => return Err(anyhow!("program {prog} is not a BTF raw tracepoint")),
        };
        self.btf_links.push((prog, id));
        Ok(())
    }

    fn attach_tracepoint(&mut self, tp: &Tracepoint) -> Result<()> {
        let id = self
            .tracepoint(tp.prog)?
            .attach(tp.category, tp.name)
            .with_context(|| format!("cannot attach to tracepoint {}:{}", tp.category, tp.name))?;
        self.tp_links.push((tp.prog, id));
        Ok(())
    }

    /// Loads the fentry/fexit pair on `fexit.function`; `btf` is the
    /// kernel's, to find the function.
    fn load_fexit(&mut self, fexit: &Fexit, btf: &aya::Btf) -> Result<()> {
        let entry: &mut FEntry = self
            .ebpf
            .program_mut(fexit.entry_prog)
            .ok_or_else(|| anyhow!("fentry program {} missing", fexit.entry_prog))?
            .try_into()?;
        entry.load(fexit.function, btf)?;
        let exit: &mut FExit = self
            .ebpf
            .program_mut(fexit.exit_prog)
            .ok_or_else(|| anyhow!("fexit program {} missing", fexit.exit_prog))?
            .try_into()?;
        exit.load(fexit.function, btf)?;
        Ok(())
    }

    fn attach_tracing(&mut self, prog: &str) -> Result<()> {
        match self.ebpf.program_mut(prog) {
            Some(aya::programs::Program::FEntry(p)) => {
                p.attach()?;
            }
            Some(aya::programs::Program::FExit(p)) => {
                p.attach()?;
            }
            _ => return Err(anyhow!("program {prog} is not fentry/fexit")),
        }
        Ok(())
    }

    /// Adds a process to the pid filter.
    pub fn add_pid(&mut self, pid: u32) -> Result<()> {
        let mut pids: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(MAP_PID_FILTER)
                .context("PID_FILTER map")?,
        )?;
        pids.insert(pid, 1, 0)
            .with_context(|| format!("cannot add pid {pid} to the filter"))?;
        Ok(())
    }

    /// The ring buffer, to be read by the transport stage.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or_else(|| anyhow!("EVENTS map missing"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// New lost events per kind since the last call.
    pub fn new_lost(&mut self) -> Result<Vec<(EventKind, u64)>> {
        let slots = EventKind::ALL.map(|k| k as u32);
        let new = new_counts(&self.ebpf, MAP_LOST, &slots, &mut self.lost_seen)?;
        Ok(new
            .into_iter()
            .filter_map(|(slot, n)| Some((EventKind::from_u32(slot)?, n)))
            .collect())
    }

    /// Runs of the attached programs that the kernel skipped since the
    /// last call, per kind of event they make: a tracepoint program does
    /// not run while another BPF program runs on the same CPU
    /// (`trace_call_bpf`), and the kernel counts each such miss
    /// (`recursion_misses` in the program's fdinfo, 5.12+). Each may be an
    /// event lost, so it is reported as one.
    /// Read at most every [`MISSES_EVERY`], unless `now` (the end).
    pub fn new_misses(&mut self, now: bool) -> Vec<(EventKind, u64)> {
        let mut out: Vec<(EventKind, u64)> = Vec::new();
        if !now && self.misses_read.is_some_and(|t| t.elapsed() < MISSES_EVERY) {
            return out;
        }
        self.misses_read = Some(Instant::now());
        let progs = self.tp_links.iter().map(|(p, _)| *p);
        let progs: Vec<_> = progs
            .chain(self.btf_links.iter().map(|(p, _)| *p))
            .collect();
        for prog in progs {
            let Some(misses) = self
                .ebpf
                .program(prog)
                .and_then(|p| p.fd().ok())
                .and_then(|fd| recursion_misses(fd.as_fd().as_raw_fd()))
            else {
                continue;
            };
            let seen = self.misses_seen.entry(prog).or_insert(0);
            let new = misses.saturating_sub(*seen);
            *seen = misses;
            if new == 0 {
                continue;
            }
            let Some(kind) = kind_of_program(prog) else {
                continue;
            };
            debug!(
                "the kernel skipped {new} run(s) of {prog} (another BPF program ran on its CPU)"
            );
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += new,
                None => out.push((kind, new)),
            }
        }
        out
    }

    /// New failures of the kernel programs per kind since the last call
    /// (None: of no kind): events dropped, or made without a field, because
    /// a read or a map update failed.
    pub fn new_errors(&mut self) -> Result<Vec<(Option<EventKind>, u64)>> {
        let slots: Vec<u32> = std::iter::once(ERRORS_NO_KIND)
            .chain(EventKind::ALL.map(|k| k as u32))
            .collect();
        let new = new_counts(&self.ebpf, MAP_ERRORS, &slots, &mut self.errors_seen)?;
        Ok(new
            .into_iter()
            .map(|(slot, n)| (EventKind::from_u32(slot), n))
            .collect())
    }

    /// The kernel's fault counters: per process, summed over CPUs.
    pub fn fault_counts(&self) -> Result<BTreeMap<u32, FaultCounts>> {
        let counts: PerCpuHashMap<_, u32, FaultCounts> = PerCpuHashMap::try_from(
            self.ebpf
                .map(MAP_FAULT_COUNTS)
                .context("FAULT_COUNTS map")?,
        )?;
        let mut out = BTreeMap::new();
        for item in &counts {
            let Ok((tgid, per_cpu)) = item else {
                // The entry was removed while iterating.
                continue;
            };
            let mut sum = FaultCounts::default();
            for c in per_cpu.iter() {
                sum.read += c.read;
                sum.write += c.write;
                sum.exec += c.exec;
                sum.present += c.present;
                if sum.comm[0] == 0 {
                    sum.comm = c.comm;
                }
            }
            out.insert(tgid, sum);
        }
        Ok(out)
    }

    /// The kernel's fault counters of one process, summed over CPUs; None
    /// when it has none.
    /// The memory syscalls of address space `mm` (its `mm_struct`
    /// address) entered and exited so far; None when none was ever
    /// entered.
    pub fn mm_seq(&self, mm: u64) -> Result<Option<MmSeq>> {
        let seq: HashMap<_, u64, MmSeq> =
            HashMap::try_from(self.ebpf.map(MAP_MM_SEQ).context("MM_SEQ map")?)?;
        match seq.get(&mm, 0) {
            Ok(v) => Ok(Some(v)),
            Err(e) if missing_key(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn fault_counts_of(&self, tgid: u32) -> Result<Option<FaultCounts>> {
        let counts: PerCpuHashMap<_, u32, FaultCounts> = PerCpuHashMap::try_from(
            self.ebpf
                .map(MAP_FAULT_COUNTS)
                .context("FAULT_COUNTS map")?,
        )?;
        let per_cpu = match counts.get(&tgid, 0) {
            Ok(v) => v,
            Err(e) if missing_key(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut sum = FaultCounts::default();
        for c in per_cpu.iter() {
            sum.read += c.read;
            sum.write += c.write;
            sum.exec += c.exec;
            sum.present += c.present;
            if sum.comm[0] == 0 {
                sum.comm = c.comm;
            }
        }
        Ok(Some(sum))
    }

    /// The resident set of `tgid` in bytes, from the kernel's counters
    /// (file, anonymous and shared memory pages), if it has been seen.
    pub fn rss(&self, tgid: u32) -> Option<u64> {
        self.rss_kinds(tgid).map(|k| k.iter().sum())
    }

    /// The same by kind: file, anonymous and shared memory pages.
    pub fn rss_kinds(&self, tgid: u32) -> Option<[u64; 3]> {
        let map: HashMap<_, u32, [i64; RSS_MEMBERS]> =
            HashMap::try_from(self.ebpf.map(MAP_RSS)?).ok()?;
        let v = map.get(&tgid, 0).ok()?;
        // MM_FILEPAGES, MM_ANONPAGES, (MM_SWAPENTS), MM_SHMEMPAGES
        Some([v[0], v[1], v[3]].map(|n| n.max(0) as u64))
    }

    /// Seeds `tgid`'s RSS counters from /proc/PID/status: the kernel's
    /// `kmem:rss_stat` tells one counter when it changes, so a process
    /// already running when the programs were attached would otherwise
    /// show only the counters that changed since (e.g. its anonymous pages
    /// without its file pages). Counters the kernel has already told are
    /// kept; the others (zero in the entry) are filled in. A change that
    /// races with this is corrected at that counter's next change.
    pub fn seed_rss(&mut self, tgid: u32) {
        let Some(now) = proc::rss_counters(tgid) else {
            return;
        };
        let Some(m) = self.ebpf.map_mut(MAP_RSS) else {
            return;
        };
        let Ok(mut map) = HashMap::<_, u32, [i64; RSS_MEMBERS]>::try_from(m) else {
            return;
        };
        // BPF_NOEXIST, then BPF_EXIST: never over an entry made meanwhile.
        const NOEXIST: u64 = 1;
        const EXIST: u64 = 2;
        match map.get(&tgid, 0) {
            Ok(mut v) => {
                for (told, seen) in v.iter_mut().zip(now) {
                    if *told == 0 {
                        *told = seen;
                    }
                }
                let _ = map.insert(tgid, v, EXIST);
            }
            Err(_) => {
                let _ = map.insert(tgid, now, NOEXIST);
            }
        }
    }

    /// Forgets an exited process's RSS counters.
    pub fn forget_rss(&mut self, tgid: u32) {
        if let Some(m) = self.ebpf.map_mut(MAP_RSS) {
            if let Ok(mut map) = HashMap::<_, u32, [i64; RSS_MEMBERS]>::try_from(m) {
                let _ = map.remove(&tgid);
            }
        }
    }

    /// Forgets an exited process's fault counters.
    pub fn remove_fault_counts(&mut self, tgid: u32) -> Result<()> {
        let mut counts: PerCpuHashMap<_, u32, FaultCounts> = PerCpuHashMap::try_from(
            self.ebpf
                .map_mut(MAP_FAULT_COUNTS)
                .context("FAULT_COUNTS map")?,
        )?;
        match counts.remove(&tgid) {
            Ok(()) => Ok(()),
            Err(e) if missing_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The key was not in the map (aya 0.14 reports a missing key of some map
/// types as the syscall's ENOENT rather than as `KeyNotFound`).
fn missing_key(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Reads the kernel programs' log records into the `log` crate (at the
/// level they were logged at: debug) as they come, from a task of the
/// current runtime. The task owns the logger, which must outlive the
/// programs' loading: dropping it closes the log's map.
fn forward_kernel_log(ebpf: &mut Ebpf) -> Result<()> {
    let runtime = tokio::runtime::Handle::try_current()
        .context("the kernel diagnostics need mmtrace's async runtime")?;
    let logger = aya_log::EbpfLogger::init(ebpf).context("cannot read the kernel programs' log")?;
    // SAFETY: the logger owns the log's ring buffer and its fd, which stays
    // open and the same for as long as the AsyncFd owns the logger.
    let mut logger = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }?;
    runtime.spawn(async move {
        while let Ok(mut ready) = logger.readable_mut().await {
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
    Ok(())
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// The growth of per-CPU counters `slots` of the per-kind array `map` since
/// `seen`, which is brought up to date.
fn new_counts(
    ebpf: &Ebpf,
    map: &str,
    slots: &[u32],
    seen: &mut [u64; KIND_SLOTS],
) -> Result<Vec<(u32, u64)>> {
    let counts: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map).with_context(|| format!("{map} map"))?)?;
    let mut out = Vec::new();
    for &slot in slots {
        let total: u64 = counts.get(&slot, 0)?.iter().sum();
        let seen = &mut seen[slot as usize];
        if total > *seen {
            out.push((slot, total - *seen));
            *seen = total;
        }
    }
    Ok(out)
}

/// A comm as the kernel stores it: at most 15 bytes and a NUL.
pub fn comm_key(comm: &[u8]) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let n = comm.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&comm[..n]);
    key
}

/// Offset of `group_dead` in sched_process_exit's record, from its format
/// (only some kernels have the field).
fn exit_group_dead_offset() -> Option<u32> {
    let tp = &TP_SCHED_PROCESS_EXIT;
    let off = tracefs::field(tp.category, tp.name, "group_dead").map(|f| f.offset as u32);
    if off.is_none() {
        // Not a problem: the exit program reads task->signal->live instead.
        debug!(
            "sched_process_exit has no group_dead field (older kernels): a process exits with \
             its last thread, as task->signal->live tells"
        );
    }
    off
}

/// The kind of event program `prog` makes (the first, for a program that
/// serves several).
fn kind_of_program(prog: &str) -> Option<EventKind> {
    EventKind::ALL
        .into_iter()
        .find(|kind| match kind.info().source {
            Source::Syscall(s) => {
                s.enter.prog == prog
                    || s.exit.prog == prog
                    || s.exit_alone.is_some_and(|tp| tp.prog == prog)
            }
            Source::Tracepoints(tps) => tps.iter().any(|tp| tp.is(prog)),
            Source::Fexit(f) => {
                f.entry_prog == prog
                    || f.exit_prog == prog
                    || f.fallback.iter().any(|tp| tp.is(prog))
            }
        })
}

/// `recursion_misses` of the BPF program behind this process's fd `fd`
/// (/proc/self/fdinfo); None where the kernel does not show it.
fn recursion_misses(fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{
        MAP_BRK_FORKED, MAP_BRK_LAST, MAP_GROWSDOWN, MAP_PENDING, MAP_STACK_FENTRY,
        MAP_STACK_PENDING, MAP_STACK_PENDING_COUNT, MAP_VMA_PIVOTS,
    };

    /// The embedded object's maps are the ones tracer-common names (the
    /// eBPF side spells them as literals in `#[map(name = ...)]`), and its
    /// programs are the ones the kinds table and the duties name.
    #[test]
    fn object_names_match_tracer_common() {
        let obj = aya_obj::Object::parse(PROGRAMS).expect("the embedded object parses");
        // Sections of global data (.rodata, .bss, ...) are maps too.
        let mut maps: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        maps.sort_unstable();
        let mut named = vec![
            MAP_EVENTS,
            MAP_LOST,
            MAP_ERRORS,
            MAP_PID_FILTER,
            MAP_COMM_FILTER,
            MAP_CGROUP_FILTER,
            MAP_FAULT_COUNTS,
            MAP_RSS,
            MAP_RUNTIME,
            MAP_PENDING,
            MAP_STACK_PENDING,
            MAP_STACK_PENDING_COUNT,
            MAP_STACK_FENTRY,
            MAP_BRK_LAST,
            MAP_BRK_FORKED,
            MAP_GROWSDOWN,
            MAP_MM_SEQ,
            MAP_VMA_PIVOTS,
            AYA_LOGS,
        ];
        named.sort_unstable();
        assert_eq!(maps, named);

        let programs = |tp: &Tracepoint| [Some(tp.prog), tp.btf_prog].into_iter().flatten();
        let mut progs = Vec::new();
        for kind in EventKind::ALL {
            match kind.info().source {
                Source::Syscall(s) => {
                    progs.extend([s.enter.prog, s.exit.prog]);
                    progs.extend(s.exit_alone.map(|tp| tp.prog));
                }
                Source::Tracepoints(tps) => progs.extend(tps.iter().flat_map(programs)),
                Source::Fexit(f) => {
                    progs.extend([f.entry_prog, f.exit_prog]);
                    progs.extend(f.fallback.iter().flat_map(programs));
                }
            }
        }
        // Every program's misses are told as events of a kind it makes.
        for &prog in &progs {
            assert!(kind_of_program(prog).is_some(), "{prog}");
        }
        assert_eq!(kind_of_program("no_such_program"), None);
        // Not a BPF program: no count.
        assert_eq!(recursion_misses(0), None);
        progs.extend(Duty::ALL.iter().flat_map(|d| programs(d.tracepoint())));
        progs.sort_unstable();
        progs.dedup();
        let mut have: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        have.sort_unstable();
        assert_eq!(have, progs);
    }
}

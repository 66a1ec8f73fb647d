//! Which tracepoints the chosen events need, read from tracer-common's kinds
//! table. The rules, with no per-program cases:
//!
//! - a chosen kind needs its syscall's enter and exit tracepoints (or, with
//!   `exit_alone`, the exit alone where its syscall has such a program), or
//!   its tracepoints, or (a kind made by fexit programs) nothing when its fexit
//!   programs loaded and its fallback tracepoints when they did not;
//! - each duty of the filter (follow children, forget exited pids, keep
//!   RSS counters) needs its own tracepoint, whatever kinds are chosen;
//! - a tracepoint several kinds or duties need is attached once;
//! - a missing tracepoint fails the plan, unless its kind is optional in the
//!   table (a syscall not every kernel has): that kind is skipped.

use tracer_common::{Duty, EventKind, Source, Tracepoint};

/// What is attached, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub tracepoints: Vec<&'static Tracepoint>,
    /// Optional kinds skipped, each with a tracepoint this kernel lacks.
    pub skipped: Vec<(EventKind, &'static Tracepoint)>,
}

/// A tracepoint the plan needs and the kernel lacks.
#[derive(Debug, PartialEq, Eq)]
pub struct Missing(pub &'static Tracepoint);

/// The tracepoints of `kind` (chosen), given whether its fexit programs
/// loaded and whether syscalls are traced at their exit alone where they
/// can be.
pub fn kind_tracepoints(
    kind: EventKind,
    fexit_loaded: bool,
    exit_alone: bool,
) -> Vec<&'static Tracepoint> {
    match &kind.info().source {
        Source::Syscall(s) => match &s.exit_alone {
            Some(alone) if exit_alone => vec![alone],
            _ => vec![&s.enter, &s.exit],
        },
        Source::Tracepoints(tps) => tps.iter().collect(),
        Source::Fexit(_) if fexit_loaded => Vec::new(),
        Source::Fexit(f) => f.fallback.iter().collect(),
    }
}

/// The plan for the kinds in `kind_mask` (EventKind::bit()) and `duties`.
/// `fexit_loaded`: the kinds (bits) whose fexit programs loaded. `exists`:
/// whether the kernel has a tracepoint. `exit_alone`: see
/// [`kind_tracepoints`].
pub fn plan(
    kind_mask: u32,
    duties: &[Duty],
    fexit_loaded: u32,
    exit_alone: bool,
    exists: impl Fn(&Tracepoint) -> bool,
) -> Result<Plan, Missing> {
    fn add(plan: &mut Plan, tp: &'static Tracepoint) {
        if !plan.tracepoints.contains(&tp) {
            plan.tracepoints.push(tp);
        }
    }
    let mut plan = Plan::default();
    for kind in EventKind::ALL {
        if kind_mask & kind.bit() == 0 {
            continue;
        }
        let tps = kind_tracepoints(kind, fexit_loaded & kind.bit() != 0, exit_alone);
        if let Some(missing) = tps.iter().find(|tp| !exists(tp)) {
            if kind.info().optional {
                plan.skipped.push((kind, missing));
                continue;
            }
            return Err(Missing(missing));
        }
        for tp in tps {
            add(&mut plan, tp);
        }
    }
    for duty in duties {
        let tp = duty.tracepoint();
        if !exists(tp) {
            return Err(Missing(tp));
        }
        add(&mut plan, tp);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Plan) -> Vec<&'static str> {
        p.tracepoints.iter().map(|tp| tp.name).collect()
    }

    fn mask(kinds: &[EventKind]) -> u32 {
        kinds.iter().fold(0, |m, k| m | k.bit())
    }

    #[test]
    fn syscalls_need_enter_and_exit() {
        let p = plan(mask(&[EventKind::Mmap]), &[], 0, false, |_| true).unwrap();
        assert_eq!(names(&p), ["sys_enter_mmap", "sys_exit_mmap"]);
    }

    /// With `exit_alone`, a syscall that can be traced at its exit alone
    /// is, and the others keep both programs.
    #[test]
    fn exit_alone_drops_the_enter_where_it_can() {
        let kinds = mask(&[EventKind::Mmap, EventKind::Brk, EventKind::Userfaultfd]);
        let p = plan(kinds, &[], 0, true, |_| true).unwrap();
        assert_eq!(
            p.tracepoints.iter().map(|tp| tp.prog).collect::<Vec<_>>(),
            [
                "sys_exit_brk_alone",
                "sys_exit_mmap_alone",
                "sys_enter_ioctl",
                "sys_exit_ioctl"
            ]
        );
        assert_eq!(p.tracepoints[1].name, "sys_exit_mmap");
    }

    #[test]
    fn stack_needs_faults_and_rss_only_without_fexit() {
        let stack = mask(&[EventKind::Stack]);
        let p = plan(stack, &[], 0, false, |_| true).unwrap();
        assert_eq!(names(&p), ["page_fault_user", "rss_stat"]);
        let p = plan(stack, &[], stack, false, |_| true).unwrap();
        assert!(p.tracepoints.is_empty());
        // With faults too, page_fault_user is attached once.
        let p = plan(
            mask(&[EventKind::Fault, EventKind::Stack]),
            &[],
            0,
            false,
            |_| true,
        )
        .unwrap();
        assert_eq!(names(&p), ["page_fault_user", "rss_stat"]);
    }

    #[test]
    fn duties_need_their_tracepoints() {
        let p = plan(
            0,
            &[Duty::FollowChildren, Duty::ForgetExited],
            0,
            false,
            |_| true,
        )
        .unwrap();
        assert_eq!(names(&p), ["task_newtask", "sched_process_exit"]);
        let p = plan(
            mask(&[EventKind::Fork]),
            &[Duty::FollowChildren],
            0,
            false,
            |_| true,
        )
        .unwrap();
        assert_eq!(names(&p), ["task_newtask"]);
        let p = plan(0, &[Duty::TrackRss], 0, false, |_| true).unwrap();
        assert_eq!(names(&p), ["rss_stat"]);
    }

    #[test]
    fn every_kind_is_planned() {
        let all = EventKind::ALL.iter().fold(0, |m, k| m | k.bit());
        let p = plan(all, &Duty::ALL, 0, false, |_| true).unwrap();
        assert_eq!(
            names(&p),
            [
                "sys_enter_brk",
                "sys_exit_brk",
                "sys_enter_mmap",
                "sys_exit_mmap",
                "sys_enter_munmap",
                "sys_exit_munmap",
                "sys_enter_mremap",
                "sys_exit_mremap",
                "sys_enter_mprotect",
                "sys_exit_mprotect",
                "page_fault_user",
                "rss_stat",
                "sched_process_exec",
                "task_newtask",
                "sched_process_exit",
                "sys_enter_madvise",
                "sys_exit_madvise",
                "sys_enter_pkey_mprotect",
                "sys_exit_pkey_mprotect",
                "sys_enter_mlock",
                "sys_exit_mlock",
                "sys_enter_mlock2",
                "sys_exit_mlock2",
                "sys_enter_munlock",
                "sys_exit_munlock",
                "sys_enter_mlockall",
                "sys_exit_mlockall",
                "sys_enter_munlockall",
                "sys_exit_munlockall",
                "sys_enter_mseal",
                "sys_exit_mseal",
                "sys_enter_shmat",
                "sys_exit_shmat",
                "sys_enter_shmdt",
                "sys_exit_shmdt",
                "sys_enter_remap_file_pages",
                "sys_exit_remap_file_pages",
                "sys_enter_ioctl",
                "sys_exit_ioctl",
                "mark_victim",
            ]
        );
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn an_optional_kind_missing_is_skipped() {
        let kinds = mask(&[EventKind::Mprotect, EventKind::PkeyMprotect]);
        let p = plan(kinds, &[], 0, false, |tp| !tp.name.contains("pkey")).unwrap();
        assert_eq!(names(&p), ["sys_enter_mprotect", "sys_exit_mprotect"]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, EventKind::PkeyMprotect);
        assert_eq!(p.skipped[0].1.name, "sys_enter_pkey_mprotect");
    }

    #[test]
    fn a_missing_tracepoint_fails() {
        let err = plan(mask(&[EventKind::Exec]), &[], 0, false, |tp| {
            tp.name != "sched_process_exec"
        })
        .unwrap_err();
        assert_eq!(err.0.name, "sched_process_exec");
        let err = plan(0, &[Duty::TrackRss], 0, false, |tp| tp.name != "rss_stat").unwrap_err();
        assert_eq!(err.0.category, "kmem");
    }
}

//! mmtrace: a system-wide eBPF tracer of memory events.
//!
//! The event's journey through the tree, one folder per stage:
//!
//! 1. `tracer-ebpf` (in the kernel): hooks filter and write records into a
//!    ring buffer.
//! 2. [`kernel`]: userspace's side of the kernel: preflight checks, BTF
//!    offsets, loading and attaching the programs, typed map access, the
//!    ring-buffer reader.
//! 3. [`event`]: records decoded into [`event::Event`]s, exhaustively.
//! 4. [`model`]: per-process address spaces ([`model::Tracker`]) that the
//!    events change, with a journal of what each event changed, and the
//!    comparison with /proc/PID/maps.
//! 5. [`session`]: the event loop that joins them: the held command, exit
//!    holds, signals, kernel-map housekeeping, consistency checks.
//! 6. [`output`]: every rendering: text and JSON lines, region changes, the
//!    timeline document, the report's sections.
//!
//! [`commands`] wires these into `stream`, `record` and `report`.
//!
//! A library so that benchmarks reach the model; the program is `main.rs`.

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod error;
pub mod event;
pub mod kernel;
pub mod model;
pub mod output;
pub mod session;

/// A hash map for the event path (keys: pids, sequence numbers) with a fast
/// hasher, randomly seeded per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

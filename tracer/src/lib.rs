//! mmtrace: a system-wide eBPF tracer of memory events.
//!
//! The event's journey through the tree:
//! `tracer-ebpf` (hooks, in the kernel) -> [`hook`] (load, attach, maps) ->
//! [`transport`] (ring buffer) -> [`decode`] -> [`event`] -> [`model`]
//! (regions) -> outputs: [`output`] (stream), [`regions`] (stream
//! --regions), [`record`] (timelines, [`timeline`]) and [`report`].
//!
//! A library so that benchmarks reach the model; the program is `main.rs`.

pub mod cli;
pub mod clock;
pub mod decode;
pub mod error;
pub mod event;
pub mod exitwatch;
pub mod hook;
pub mod model;
pub mod output;
pub mod preflight;
pub mod record;
pub mod regions;
pub mod report;
pub mod session;
pub mod signals;
pub mod spawn;
pub mod stream;
pub mod timeline;
pub mod transport;

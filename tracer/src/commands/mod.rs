//! The commands: each wires the stages together for one job.
//!
//! - [`stream`]: events (or, with `--regions`, the region changes they
//!   make) live, as text or JSON lines.
//! - [`record`]: region timelines checked against /proc, as one document.
//! - [`report`]: a timeline read back and summarised.

pub mod record;
pub mod report;
pub mod stream;

//! Transport stage: reads records from the kernel's ring buffer.
//!
//! The programs wake the reader only when a quarter of the buffer is
//! waiting (and with an exec, whose seed is read at once); for the rest the
//! reader polls on a short timer, which keeps the per-event cost near the
//! hooks' floor.

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> Result<EventReader> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the ring buffer: {e}"))?;
        Ok(EventReader { fd })
    }

    /// Waits until the kernel signals data.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every waiting record to `f`; returns how many.
    pub fn drain(&mut self, f: impl FnMut(&[u8])) -> usize {
        self.drain_some(usize::MAX, f)
    }

    /// Hands up to `max` waiting records to `f`; returns how many.
    pub fn drain_some(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else {
                break;
            };
            f(&item);
            n += 1;
        }
        n
    }
}

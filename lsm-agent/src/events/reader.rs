//! The ring-buffer reader: woken by epoll through tokio, drains every record, decodes it and
//! hands it on without waiting for a consumer, except with a denial's record: that one waits
//! for room in the queue rather than being dropped.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};
use tracing::warn;

use super::decode::{KernelEvent, decode};

/// Counters of the reader, exported as metrics later.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub received: AtomicU64,
    /// Decoded events dropped because the consumer's queue was full.
    pub queue_lost: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Events of an earlier agent's pinned programs that no agent read: still in its ring when
    /// it was retired, or lost because that ring was full (see `bpf::pin`).
    pub handover_lost: AtomicU64,
}

/// Reads `ring` until the receiver goes away.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<KernelEvent>,
    stats: Arc<ReaderStats>,
) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the RingBuf, which owns the fd, for as long as the AsyncFd
    // exists, so the registered fd stays valid until it is deregistered on drop.
    let mut afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
    loop {
        let mut guard = afd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            match decode(&item) {
                Ok(ev) if ev.is_enforcement() => {
                    drop(item);
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(ev) => match tx.try_send(ev) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        stats.queue_lost.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                },
                Err(e) => {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    warn!("undecodable ring-buffer record: {e}");
                }
            }
        }
        guard.clear_ready();
    }
}

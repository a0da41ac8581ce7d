//! Jobs done and failed, counted by the delivery path and kept in `celery@<name>.stats` beside
//! the pid file, where `cm queue status` reads them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::control::WorkerStats;

/// Often enough for a person watching `cm queue status`; written only when a count moved.
const STATS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub(super) struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
    /// What `cm queue status` shows of flow control: consuming or not, slots now and asked.
    paused: AtomicBool,
    slots: AtomicUsize,
    desired: AtomicUsize,
}

impl Counters {
    pub(super) fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub(super) fn set_slots(&self, n: usize) {
        self.slots.store(n, Ordering::Relaxed);
    }

    pub(super) fn set_desired(&self, n: usize) {
        self.desired.store(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> WorkerStats {
        let count = |a: &AtomicUsize| match a.load(Ordering::Relaxed) {
            0 => None,
            n => Some(u16::try_from(n).unwrap_or(u16::MAX)),
        };
        WorkerStats {
            jobs_done: self.done.load(Ordering::Relaxed),
            jobs_failed: self.failed.load(Ordering::Relaxed),
            broker: None,
            paused: self.paused.load(Ordering::Relaxed),
            concurrency: count(&self.slots),
            desired_concurrency: count(&self.desired),
        }
    }

    /// The last word, once the worker stopped (connected to nothing).
    pub(super) fn write(&self, path: &std::path::Path) {
        if let Err(e) = self.snapshot().write(path) {
            warn!("writing stats: {e}");
        }
    }
}

/// Rewrites the stats file whenever the counts or the broker node (of `brokers`) moved,
/// until aborted.
pub(super) fn spawn_writer(
    stats: Arc<Counters>,
    path: PathBuf,
    brokers: crate::amqp::Brokers,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = WorkerStats {
                broker: brokers.connected_node(),
                ..stats.snapshot()
            };
            if last.as_ref() != Some(&now) {
                if let Err(e) = now.write(&path) {
                    warn!("writing stats: {e}");
                }
                last = Some(now);
            }
            tokio::time::sleep(STATS_EVERY).await;
        }
    })
}

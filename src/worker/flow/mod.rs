//! Flow control of this worker: whether it takes jobs (`cm queue pause|resume`, Celery's
//! `cancel_consumer`/`add_consumer`) and how many at once (`cm queue scale`, `pool_grow`,
//! `pool_shrink`, `autoscale`). The orders are rows in the store (`store::controls`), so they
//! reach every host and outlast restarts; [`poll`] reads this worker's queue's rows every
//! [`POLL_EVERY`] and publishes what they ask on a watch channel, which the session's consume
//! loop follows (`session.rs`: cancel the consumer and hand back what was prefetched; consume
//! again; `basic.qos` with the prefetch of the new size). An order given over this worker's
//! pidbox is read back at once instead of at the next poll.

pub(super) mod celery;
pub(super) mod rates;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::running::Running;
use crate::config::QueueConfig;
use crate::jobs::cancel::Stops;
use crate::store::controls::{self, Control, Scope};
use crate::store::{Store, StoreError};
use rates::KnownRates;

/// How soon an order given elsewhere (another host, the web, `cm queue pause`) is seen.
pub(super) const POLL_EVERY: Duration = Duration::from_millis(500);

/// What the worker is asked to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) paused: bool,
    pub(super) concurrency: u16,
}

/// The orders for one worker, read from the store.
pub(super) struct Flow {
    store: Store,
    queue: String,
    host: String,
    node: String,
    configured: u16,
    /// The configured prefetch per slot, kept when the slots change.
    prefetch_ratio: f64,
    tx: watch::Sender<Wanted>,
    /// The newest `pause --terminate` acted on (or seen at start, when nothing ran yet).
    terminated: Mutex<Option<Option<i64>>>,
    /// Operators' rate limits (`celery control rate_limit`, `cm tasks rate`), read with the
    /// orders.
    pub(super) rates: KnownRates,
}

impl Flow {
    pub(super) fn new(store: Store, queue: &QueueConfig, host: &str, node: &str) -> Self {
        let wanted = Wanted {
            paused: false,
            concurrency: queue.concurrency,
        };
        Self {
            store,
            queue: queue.name.clone(),
            host: host.to_string(),
            node: node.to_string(),
            configured: queue.concurrency,
            prefetch_ratio: f64::from(queue.prefetch) / f64::from(queue.concurrency.max(1)),
            tx: watch::Sender::new(wanted),
            terminated: Mutex::new(None),
            rates: KnownRates::default(),
        }
    }

    /// What the session follows.
    pub(super) fn watch(&self) -> watch::Receiver<Wanted> {
        self.tx.subscribe()
    }

    pub(super) fn now(&self) -> Wanted {
        *self.tx.borrow()
    }

    pub(super) fn queue(&self) -> &str {
        &self.queue
    }

    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// The prefetch for `slots`: the config's ratio of prefetch to concurrency (4 by default),
    /// never fewer than the slots, as the config's rule says.
    pub(super) fn prefetch_for(&self, slots: u16) -> u16 {
        let p = (self.prefetch_ratio * f64::from(slots)).round();
        (p.min(f64::from(u16::MAX)) as u16).max(slots)
    }

    /// Reads the rows and publishes what they ask. Returns the jobs a new `pause --terminate`
    /// asks to stop (none the first time: the worker had run nothing before it read).
    pub(super) async fn refresh(&self, running: &Running) -> Result<Vec<String>, StoreError> {
        self.rates.set(self.store.rate_overrides().await?);
        let rows = self.store.controls(Some(&self.queue)).await?;
        let desired = controls::desired(&rows, &self.host, &self.node);
        let wanted = Wanted {
            paused: desired.paused,
            concurrency: desired.concurrency.unwrap_or(self.configured),
        };
        self.tx.send_if_modified(|now| {
            let changed = *now != wanted;
            *now = wanted;
            changed
        });
        let mut seen = self
            .terminated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let new_terminate = match *seen {
            None => false,
            Some(before) => desired.terminate_ms > before,
        };
        *seen = Some(desired.terminate_ms);
        Ok(if new_terminate && desired.paused {
            running.ids()
        } else {
            Vec::new()
        })
    }

    /// Stores an order for this worker alone (Celery's pidbox methods) and follows it at once.
    pub(super) async fn order(
        &self,
        control: Control,
        by: &str,
        running: &Running,
        stops: &Stops,
    ) -> Result<(), StoreError> {
        let scope = Scope::Worker(self.node.clone());
        self.store
            .set_control(&self.queue, &scope, control, by)
            .await?;
        let stop = self.refresh(running).await?;
        terminate(&stop, stops);
        Ok(())
    }
}

/// Reads the orders every [`POLL_EVERY`] until aborted.
pub(super) async fn poll(flow: Arc<Flow>, running: Arc<Running>, stops: Stops) {
    let mut failing = false;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        match flow.refresh(&running).await {
            Ok(stop) => {
                failing = false;
                terminate(&stop, &stops);
            }
            Err(e) => {
                if !failing {
                    warn!("reading the queue's pause and scale orders and the operators' rate limits: {e}; going on as before, trying again");
                }
                failing = true;
            }
        }
    }
}

/// Stops `ids` as a stop past its grace does: each goes back to the queue and runs again.
fn terminate(ids: &[String], stops: &Stops) {
    if ids.is_empty() {
        return;
    }
    info!(
        "paused with --terminate: stopping {} running job(s) [{}]; they go back to the queue",
        ids.len(),
        ids.join(", ")
    );
    for id in ids {
        stops.interrupt(id);
    }
}

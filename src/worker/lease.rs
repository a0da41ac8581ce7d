//! Jobs longer than the broker allows. RabbitMQ closes the channel of a delivery left unacked
//! past its `consumer_timeout` and hands the message out again, so a long job would run twice.
//! A job still running after `[worker] lease_after_seconds` is therefore taken over by the
//! store: a lease (owner, until) is committed, then the message is acked. From then on:
//!
//! - this worker renews its leases every third of `[worker] lease_seconds`;
//! - should it fail to renew until its lease runs out (the store unreachable), it stops the job
//!   itself, since another worker may take it over from then on;
//! - every worker reaps its queue's lapsed leases (a worker killed mid-job): it claims one
//!   atomically in the store, publishes the job again and marks it requeued, so it runs again
//!   on whichever worker takes it.
//!
//! Here: the jobs held ([`LeasedJobs`]) and their renewal. A lease is taken by the run step
//! (`delivery::run`), and lapsed ones are reaped by each session (`republish::reap`).
//!
//! The guarantee: a leased job runs to its end once, unless its worker dies or loses the store
//! for longer than the lease; then it runs again (at least once), never two runs at a time as
//! long as the workers' clocks agree to within a second, and the first final state stands.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::jobs::cancel::Stops;
use crate::store::{self, Store};

/// The jobs this worker holds by lease, to renew; shared by its sessions.
#[derive(Debug, Clone, Default)]
pub(super) struct LeasedJobs {
    ids: Arc<Mutex<HashSet<store::SharedText>>>,
}

impl LeasedJobs {
    fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|id| id.to_string()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<store::SharedText>> {
        // A panic while holding it leaves a set of ids: still the truth.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, id: store::SharedText) {
        self.lock().insert(id);
    }

    /// Whether it was still held.
    pub(super) fn remove(&self, id: &str) -> bool {
        self.lock().remove(id)
    }
}

/// Whether a job was leased, as it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseEnd {
    /// Never: its delivery is still to be settled.
    NotLeased,
    /// Held to the end: its delivery was acked when the lease was taken.
    HeldToEnd,
    /// Acked, but the lease could not be renewed in time and lapsed: a reaper may have
    /// published the job again already.
    Lapsed,
}

impl LeaseEnd {
    /// Whether its delivery was acked when the lease was taken (nothing is left to ack).
    pub(super) fn acked(self) -> bool {
        self != Self::NotLeased
    }
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Renews this worker's leases every third of `lease`, until the process ends. A lease that
/// ran out before a renewal could be stored may be another worker's by now: it is given up and
/// its job interrupted here (`stops`).
pub(super) async fn renew(
    store: Store,
    node: store::SharedText,
    held: LeasedJobs,
    lease: Duration,
    stops: Stops,
) {
    let mut renewed_until = store::now_ms().saturating_add(millis(lease));
    loop {
        tokio::time::sleep(lease / 3).await;
        let ids = held.ids();
        let until = store::now_ms().saturating_add(millis(lease));
        if ids.is_empty() {
            renewed_until = until;
            continue;
        }
        match store.renew_leases(&node, &ids, until).await {
            Ok(_) => renewed_until = until,
            Err(e) if store::now_ms() >= renewed_until => {
                warn!(
                    "cannot renew the leases of {} job(s): {e}; they lapsed, so they stop here and run again elsewhere",
                    ids.len()
                );
                for id in &ids {
                    held.remove(id);
                    stops.interrupt(id);
                }
            }
            Err(e) => warn!(
                "renewing the leases of {} job(s): {e}; trying again",
                ids.len()
            ),
        }
    }
}

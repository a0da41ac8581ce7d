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
//! The guarantee: a leased job runs to its end once, unless its worker dies or loses the store
//! for longer than the lease; then it runs again (at least once), never two runs at a time as
//! long as the workers' clocks agree to within a second, and the first final state stands.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::delivery::{say, Ctx};
use crate::celery::message::TaskMessage;
use crate::jobs::cancel::Stops;
use crate::jobs::run::Finish;
use crate::store::{self, Event, Store};

/// The jobs this worker holds by lease, to renew; shared by its sessions.
#[derive(Debug, Clone, Default)]
pub(super) struct Held {
    ids: Arc<Mutex<HashSet<store::SharedText>>>,
}

impl Held {
    fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|id| id.to_string()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<store::SharedText>> {
        // A panic while holding it leaves a set of ids: still the truth.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: store::SharedText) {
        self.lock().insert(id);
    }

    /// Whether it was still held.
    fn remove(&self, id: &str) -> bool {
        self.lock().remove(id)
    }
}

/// Whether a job was leased, as it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// Never: its delivery is still to be settled.
    None,
    /// Held to the end: its delivery was acked when the lease was taken.
    Held,
    /// Acked, but the lease could not be renewed in time and lapsed: a reaper may have
    /// published the job again already.
    Lapsed,
}

/// Runs a job to its end (`job`); should it still run after `[worker] lease_after_seconds`, a
/// lease is committed and delivery `tag` acked. Returns how it ended and whether it was
/// leased: then its delivery is settled already, and what follows must not ack or nack it.
pub(super) async fn run_past(
    ctx: &Ctx,
    id: &store::SharedText,
    task: &str,
    tag: u64,
    job: impl Future<Output = Finish>,
) -> (Finish, Lease) {
    let mut job = std::pin::pin!(job);
    let timer = tokio::time::sleep(ctx.cfg.lease_after);
    let mut timer = std::pin::pin!(timer);
    let mut leased = false;
    let finish = loop {
        tokio::select! {
            biased;
            finish = &mut job => break finish,
            () = &mut timer, if !leased => {
                if take(ctx, id, task).await {
                    ctx.acks.ack(tag);
                    leased = true;
                } else {
                    // The store is down: the delivery stays unacked, and the next try comes
                    // before the broker's consumer_timeout, which is minutes.
                    let next = tokio::time::Instant::now() + ctx.cfg.lease / 3;
                    timer.as_mut().reset(next);
                }
            }
        }
    };
    let lease = match (leased, leased && ctx.held.remove(id)) {
        (false, _) => Lease::None,
        (true, true) => Lease::Held,
        (true, false) => Lease::Lapsed,
    };
    (finish, lease)
}

/// Commits a lease on job `id` for this worker; true once it is durable.
async fn take(ctx: &Ctx, id: &store::SharedText, task: &str) -> bool {
    let at = store::now_ms();
    let until = at.saturating_add(millis(ctx.cfg.lease));
    let leased = Event::Leased {
        id: id.clone(),
        worker: ctx.node.clone(),
        at,
        until,
    };
    // Held before the commit, so that no renewal round can miss it.
    ctx.held.insert(id.clone());
    match ctx.writer.commit(leased).await {
        Ok(()) => {
            say(
                &ctx.node,
                id,
                task,
                &format!(
                    "LEASED: running past {:?}, acked; held by a lease in the store",
                    ctx.cfg.lease_after
                ),
            );
            true
        }
        Err(e) => {
            ctx.held.remove(id);
            warn!("job {id}: cannot take a lease ({e}); it stays unacked on the broker");
            false
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Renews this worker's leases every third of `lease`, until the process ends. A lease that
/// ran out before a renewal could be stored may be another worker's by now: it is given up and
/// its job interrupted here (`stops`).
pub(super) async fn renew(
    store: Store,
    node: store::SharedText,
    held: Held,
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

/// Reaps the lapsed leases of this session's queue, every half `lease`, until the session
/// ends: each one this worker claims is published again.
pub(super) async fn reap(ctx: Arc<Ctx>) {
    let lease = ctx.cfg.lease;
    loop {
        tokio::time::sleep(lease / 2).await;
        let now = store::now_ms();
        let lapsed = match ctx.store.lapsed_leases(&ctx.queue, now, 100).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!("looking for lapsed leases on queue {}: {e}", ctx.queue);
                continue;
            }
        };
        for job in lapsed {
            let until = store::now_ms().saturating_add(millis(lease));
            match ctx.store.claim_lapsed(&job.id, &ctx.node, now, until).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!("claiming the lapsed lease of job {}: {e}", job.id);
                    continue;
                }
            }
            let owner = job.lease_owner.as_deref().unwrap_or("?");
            let why = format!("the lease of {owner} lapsed");
            publish_again(&ctx, &job, &why).await;
        }
    }
}

/// A leased job interrupted by this worker's shutdown: its delivery was acked, so it is
/// published again here (should that fail, its lease lapses and a reaper does it).
pub(super) async fn hand_back(ctx: &Ctx, msg: &TaskMessage, why: &str) {
    let mut again = msg.clone();
    again.eta_ms = None;
    publish(ctx, again, why).await;
}

/// Publishes job `job` again from what the store keeps of it (same id, task, arguments and
/// retries, and the options a scheduled job keeps: expires, time limits, reply address; no
/// eta, it is due), then records it REQUEUED. A job received straight away keeps no options:
/// re-published, it runs without its message's expiry and time limit, and a client waiting on
/// `.get()` over rpc:// waits in vain (the store has its end).
pub(super) async fn publish_again(ctx: &Ctx, job: &store::JobRow, why: &str) {
    let msg = (|| {
        let (args, kwargs): (
            Vec<serde_json::Value>,
            serde_json::Map<String, serde_json::Value>,
        ) = serde_json::from_str(&job.args)
            .map_err(|e| anyhow::anyhow!("its stored arguments are not [args, kwargs]: {e}"))?;
        let mut msg = TaskMessage::new(&job.task, args, kwargs);
        msg.id.clone_from(&job.id);
        msg.retries = u32::try_from(job.retries).unwrap_or(0);
        let o = &job.options;
        msg.expires_ms = o.expires_ms;
        let limit = |ms: Option<i64>| {
            ms.and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis)
        };
        msg.time_limit.hard = limit(o.time_limit_ms);
        msg.time_limit.soft = limit(o.soft_time_limit_ms);
        msg.reply_to.clone_from(&o.reply_to);
        anyhow::Ok(msg)
    })();
    match msg {
        Ok(msg) => publish(ctx, msg, why).await,
        Err(e) => warn!(
            "job {}: {why}, but it cannot be published again: {e:#}",
            job.id
        ),
    }
}

/// Publishes `msg` (confirmed), then records it REQUEUED.
async fn publish(ctx: &Ctx, msg: TaskMessage, why: &str) {
    let (id, task) = (msg.id.as_str(), msg.task.as_str());
    let (body, props) = msg.encode(&ctx.node);
    match ctx.publisher.publish_confirmed(&ctx.queue, &body, props).await {
        Ok(()) => {
            let detail = format!("{why}; published again by {}", ctx.node);
            say(&ctx.node, id, task, &format!("REQUEUED: {detail}"));
            if let Err(e) = ctx.store.requeued(id, &ctx.node, &detail).await {
                warn!("job {id}: published again, but not recorded as requeued: {e}");
            }
            info!("job {id}: {detail}");
        }
        Err(e) => warn!(
            "job {id}: {why}, but publishing it again failed: {e}; once its lease lapses a reaper tries again"
        ),
    }
}

//! The second step: may this job start now? Decided here, before it takes a job slot's time:
//!
//! - a redelivery of a job whose final state is stored is acked without running again, and so
//!   is a second copy of a job released from the store's outbox (final, or taken already);
//! - a revoked job ends REVOKED, unrun (the ids come from the store, `revokes`);
//! - a job received after its `expires` ends REVOKED, "expired at <time>", as a Celery worker
//!   ends it (straight from a client, or published again when due);
//! - a job that must wait ([`must_wait`]: today, its `eta` is ahead) is not run and not held
//!   unacked (a prefetched message waiting for hours would block a job slot, and run past the
//!   broker's consumer_timeout): it is recorded SCHEDULED in the store with the options its
//!   message had, and then acked. The store holds it from then on, across restarts of every
//!   worker; a revoke ends it at once; each session's scheduler (`republish::schedule`)
//!   publishes it again when due.
//! - a job whose task sets flow control (`rate_limit`, `concurrency_key`) passes its gates in
//!   one store transaction ([`throttle`]): its places taken, it runs; a gate spent, it is held
//!   THROTTLED with why and acked, and a releaser (`worker::gates`) publishes it again in turn.

use lapin::message::Delivery;
use tracing::warn;

use super::outcome::{self, Outcome};
use super::screen::ReceivedJob;
use super::settle::{JobEnd, Settlement};
use crate::celery::message::TaskMessage;
use crate::jobs;
use crate::store;
use crate::store::flow::{Admission, Gate};
use crate::worker::context::{job_line, log_time, SessionContext};
use crate::worker::gates;
use crate::worker::lease::LeaseEnd;

/// An eta at most this far ahead runs now: not worth a round trip through the store.
const EARLY_MS: i64 = 50;

/// `None`: it may start now. Otherwise how its delivery ends without running here: already
/// final, revoked, expired, or held in the store until it may start.
pub(super) async fn admit(
    ctx: &SessionContext,
    delivery: &Delivery,
    received: &ReceivedJob,
    held: bool,
) -> Option<Settlement> {
    let w = &*ctx.worker;
    let ReceivedJob { msg, id, .. } = received;
    // Only a redelivery can be a job that already ran: look it up then, and not on the hot path.
    // A job released from the outbox may have been published twice (its publisher died
    // between the publish and the outbox row's delete): looked up too.
    let released = !delivery.redelivered && is_released(delivery);
    if released {
        match w.store.state_of(id).await {
            Ok(Some(state)) if store::is_final(&state) => {
                return Some(already_final(ctx, received, state).await)
            }
            // RECEIVED while it was held here for a slot: this worker's own record, unless
            // another worker's copy took it since.
            Ok(Some(state)) if held && state == store::RECEIVED => match w.store.get(id).await {
                Ok(Some(row)) if row.worker.as_deref() == Some(&*w.node) => {}
                Ok(_) => return Some(duplicate(ctx, received, state).await),
                Err(e) => return Some(Settlement::give_back(id, e.to_string())),
            },
            // Another copy of it was taken already (it is RECEIVED, STARTED, a step...).
            Ok(Some(state)) if state != store::PENDING => {
                return Some(duplicate(ctx, received, state).await)
            }
            Ok(_) => {}
            Err(e) => return Some(Settlement::give_back(id, e.to_string())),
        }
    }
    if delivery.redelivered {
        match w.store.state_of(id).await {
            Ok(Some(state)) if store::is_final(&state) => {
                return Some(already_final(ctx, received, state).await)
            }
            Ok(_) => {}
            Err(e) => return Some(Settlement::give_back(id, e.to_string())),
        }
    }
    if let Some(by) = w.revoked.revoked_by(id) {
        let why = if by.is_empty() {
            "revoked".to_string()
        } else {
            format!("revoked by {by}")
        };
        return Some(never_runs(ctx, received, held, why, false));
    }
    let now = store::now_ms();
    if let Some(expires) = msg.expires_ms.filter(|&e| now > e) {
        let why = format!("expired at {}", log_time(expires));
        return Some(never_runs(ctx, received, held, why, true));
    }
    if let Some(settled) = unique(ctx, received, held).await {
        return Some(settled);
    }
    if let Some(wait) = must_wait(msg, now) {
        return Some(hold(ctx, received, wait).await);
    }
    let gates = gates::gates(&w.cfg, &w.remote.flow.rates, &received.job);
    if gates.is_empty() {
        // Admitted: it runs now.
        return None;
    }
    throttle(ctx, received, &gates, now).await
}

/// Passes the job's flow control gates in the store: `None` when its places are taken (it
/// runs now), else held THROTTLED there with why, and its message acked.
async fn throttle(
    ctx: &SessionContext,
    received: &ReceivedJob,
    gates: &[Gate],
    now: i64,
) -> Option<Settlement> {
    let w = &*ctx.worker;
    let ReceivedJob { msg, job, id } = received;
    let record = jobs::record(msg, Some(job), &w.queue.name, None, now);
    match w
        .store
        .admit_flow(&record, &jobs::options_of(msg), gates, &w.node)
        .await
    {
        Ok(Admission::Go) => None,
        Ok(Admission::Held { reason }) => {
            let line = format!("THROTTLED: {reason}; acked, held by the store");
            job_line(&w.node, id, &msg.task, &line);
            Some(Settlement::Ack)
        }
        Err(e) => Some(Settlement::give_back(
            id,
            format!("cannot pass its flow control: {e}"),
        )),
    }
}

/// A job of a task with a unique key that no cm publisher stored (a Celery client sent it
/// straight to the broker): its first receipt takes the key, in the transaction that stores it,
/// or, the key being held by another job, it ends REVOKED unrun, its error and rpc:// reply
/// naming the holder. A job the store knows already (a cm publisher took its key) goes on.
async fn unique(ctx: &SessionContext, received: &ReceivedJob, held: bool) -> Option<Settlement> {
    let w = &*ctx.worker;
    let ReceivedJob { msg, job, id } = received;
    let claim = job.unique_claim(&w.cfg, id)?;
    let record = jobs::record(msg, Some(job), &w.queue.name, None, store::now_ms());
    match w.store.receive_unique(&record, &claim).await {
        Ok(None) => None,
        Ok(Some(d)) => {
            let why = format!(
                "already queued as {}: unique key {:?} is held",
                d.holder, d.key
            );
            job_line(
                &w.node,
                id,
                &msg.task,
                &format!("{why}; acked without running"),
            );
            Some(never_runs(ctx, received, held, why, false))
        }
        Err(e) => Some(Settlement::give_back(
            id,
            format!("cannot take its unique key: {e}"),
        )),
    }
}

/// Why a job may not start yet.
enum Wait {
    /// Its eta (ms since the epoch) is ahead.
    Eta(i64),
}

/// Whether this job must wait for its eta. (Parents wait in the store before publishing; a
/// rate limit and a concurrency key are [`throttle`]'s, decided in the store's transaction.)
fn must_wait(msg: &TaskMessage, now: i64) -> Option<Wait> {
    msg.eta_ms
        .filter(|&eta| eta > now + EARLY_MS)
        .map(Wait::Eta)
}

/// Records the job SCHEDULED, then acks its message: the store holds it from then on.
async fn hold(ctx: &SessionContext, received: &ReceivedJob, wait: Wait) -> Settlement {
    let w = &*ctx.worker;
    let ReceivedJob { msg, job, id } = received;
    let Wait::Eta(eta) = wait;
    let record = jobs::record(msg, Some(job), &w.queue.name, None, store::now_ms());
    if let Err(e) = w.store.schedule(&record, &record.options, &w.node).await {
        return Settlement::give_back(id, format!("cannot schedule it: {e}"));
    }
    job_line(
        &w.node,
        id,
        &msg.task,
        &format!(
            "SCHEDULED for {} ({}); acked, held by the store",
            log_time(eta),
            job.describe()
        ),
    );
    Settlement::Ack
}

/// Whether the message was published from the store's outbox (a released job).
fn is_released(delivery: &Delivery) -> bool {
    delivery.properties.headers().as_ref().is_some_and(|h| {
        h.inner()
            .contains_key(crate::client::outbox::RELEASED_HEADER)
    })
}

/// A second copy of a released job whose first copy a worker took already: noted in its
/// history and acked, unrun.
async fn duplicate(ctx: &SessionContext, received: &ReceivedJob, state: String) -> Settlement {
    let w = &*ctx.worker;
    let ReceivedJob { msg, id, .. } = received;
    job_line(
        &w.node,
        id,
        &msg.task,
        &format!("a second copy from the outbox, the job already {state}; acked without running"),
    );
    if let Err(e) = w.writer.commit(outcome::redelivered(w, id, state)).await {
        warn!("recording the duplicate of job {id}: {e}");
    }
    Settlement::Ack
}

/// A redelivery of a job whose final state is stored: noted in its history and acked.
async fn already_final(ctx: &SessionContext, received: &ReceivedJob, state: String) -> Settlement {
    let w = &*ctx.worker;
    let ReceivedJob { msg, id, .. } = received;
    job_line(
        &w.node,
        id,
        &msg.task,
        &format!("already {state}; acked without running again"),
    );
    if let Err(e) = w.writer.commit(outcome::redelivered(w, id, state)).await {
        warn!("recording the redelivery of job {id}: {e}");
    }
    Settlement::Ack
}

/// A job that will never run (revoked before it ran, or `expired`): received (unless `held`
/// recorded that already), then ended REVOKED with `why`.
fn never_runs(
    ctx: &SessionContext,
    received: &ReceivedJob,
    held: bool,
    why: String,
    expired: bool,
) -> Settlement {
    let w = &*ctx.worker;
    let ReceivedJob { msg, job, id } = received;
    if !held {
        w.writer
            .send(outcome::received(w, msg, job, store::now_ms()));
    }
    Settlement::JobEnded(JobEnd {
        msg: msg.clone(),
        id: id.clone(),
        outcome: Outcome::Revoked {
            why,
            terminated: false,
            signal: None,
            expired,
        },
        output: None,
        lease: LeaseEnd::NotLeased,
        started: None,
    })
}

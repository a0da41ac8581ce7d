//! A message's `eta` (Celery sends a `countdown` as one) and `expires`.
//!
//! A job received more than [`EARLY`] before its eta is not run and not held unacked (a
//! prefetched message waiting for hours would block a job slot, and run past the broker's
//! consumer_timeout): it is recorded SCHEDULED in the store with its eta and the options its
//! message had, and then acked. Each worker session runs a scheduler ([`run`]) that claims its
//! queue's due SCHEDULED jobs in one statement (of racing workers exactly one gets each),
//! publishes each again with the same id and no eta, and records it REQUEUED: then it runs as
//! any job does. The store holds it, so it survives restarts of every worker; a revoke ends it
//! at once. The claim is a lease: should its claimer die before publishing, the claim lapses
//! and a lease reaper (`lease::reap`) publishes it instead.
//!
//! A job received after its `expires` (straight from a client, or published again when due) is
//! acked unrun and ends REVOKED, "expired at <time>", as a Celery worker ends it.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tracing::warn;

use super::delivery::{give_back, say, Ctx};
use super::lease;
use super::outcome::Outcome;
use crate::celery::message::TaskMessage;
use crate::jobs::{self, Job};
use crate::store::{self, Event, MessageOptions};

/// An eta at most this far ahead runs now: not worth a round trip through the store.
const EARLY_MS: i64 = 50;
/// How often the scheduler looks for due jobs: a job runs at most about this late (plus the
/// publish and the delivery).
const POLL: Duration = Duration::from_millis(500);
/// Due jobs claimed per look; more wait for the next.
const BATCH: i64 = 100;

/// Settles a delivery whose `expires` has passed (REVOKED, unrun) or whose `eta` is ahead
/// (SCHEDULED in the store, then acked). True when it did: the caller is done with it.
pub(super) async fn settles_early(
    ctx: &Ctx,
    msg: &TaskMessage,
    job: &Job,
    delivery: &Delivery,
    id: &store::SharedText,
) -> bool {
    let now = store::now_ms();
    if let Some(expires) = msg.expires_ms.filter(|&e| now > e) {
        expired(ctx, msg, job, delivery, id, expires).await;
        return true;
    }
    match msg.eta_ms {
        Some(eta) if eta > now + EARLY_MS => {
            hold(ctx, msg, job, delivery, id, eta).await;
            true
        }
        _ => false,
    }
}

/// What the store keeps of `msg`'s options, to publish it again as it came.
fn options_of(msg: &TaskMessage) -> MessageOptions {
    let ms = |d: Option<Duration>| d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    MessageOptions {
        eta_ms: msg.eta_ms,
        expires_ms: msg.expires_ms,
        time_limit_ms: ms(msg.time_limit.hard),
        soft_time_limit_ms: ms(msg.time_limit.soft),
        reply_to: msg.reply_to.clone(),
    }
}

/// Records the job SCHEDULED, then acks its message; the store holds it from then on.
async fn hold(
    ctx: &Ctx,
    msg: &TaskMessage,
    job: &Job,
    delivery: &Delivery,
    id: &store::SharedText,
    eta: i64,
) {
    let record = jobs::record(msg, Some(job), &ctx.queue, None, store::now_ms());
    if let Err(e) = ctx
        .store
        .schedule(&record, &options_of(msg), &ctx.node)
        .await
    {
        return give_back(ctx, delivery, id, &format!("cannot schedule it: {e}")).await;
    }
    say(
        &ctx.node,
        id,
        &msg.task,
        &format!(
            "SCHEDULED for {} ({}); acked, held by the store",
            at(eta),
            job.describe()
        ),
    );
    ctx.acks.ack(delivery.delivery_tag);
}

/// A delivery after its expiry: recorded, REVOKED, answered (rpc://) and acked; never run.
async fn expired(
    ctx: &Ctx,
    msg: &TaskMessage,
    job: &Job,
    delivery: &Delivery,
    id: &store::SharedText,
    expires: i64,
) {
    let now = store::now_ms();
    // A job a Celery client published has no row until a worker receives it; a final row stays.
    ctx.writer.send(Event::Received {
        job: jobs::record(msg, Some(job), &ctx.queue, None, now),
        worker: ctx.node.clone(),
        at: now,
    });
    let outcome = Outcome::Revoked {
        why: format!("expired at {}", at(expires)),
        terminated: false,
        signal: None,
        expired: true,
    };
    outcome.log(&ctx.node, id, &msg.task, ctx.retries);
    if let Err(e) = ctx.writer.commit(outcome.event(id, &ctx.node, None)).await {
        return give_back(ctx, delivery, id, &e.to_string()).await;
    }
    outcome.follow_up(ctx, msg, Some(delivery)).await;
}

/// A time in ms since the epoch as the log and the store show it (RFC 3339, UTC).
fn at(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Publishes again the due SCHEDULED jobs of this session's queue, every [`POLL`], until the
/// session ends.
pub(super) async fn run(ctx: Arc<Ctx>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(POLL).await;
        let now = store::now_ms();
        let until =
            now.saturating_add(i64::try_from(ctx.cfg.lease.as_millis()).unwrap_or(i64::MAX));
        let due = match ctx
            .store
            .claim_due(&ctx.queue, &ctx.node, now, until, BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                if !failing {
                    warn!("looking for due scheduled jobs on queue {}: {e}", ctx.queue);
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for job in due {
            let eta = job.options.eta_ms.map_or_else(|| "?".into(), at);
            lease::publish_again(&ctx, &job, &format!("eta {eta} reached")).await;
        }
    }
}

//! The last step, and the one place that says what happens to a message. Every delivery ends
//! in one [`Settlement`], carried out here: acked, back to its queue, to the dead letters, or
//! published again; and for a job that ended, its end committed first, in the one transaction
//! that also takes what a final state releases ([`commit_end`]).
//!
//! At least once: a message is acked only once its job's end is durable in the store (or the
//! store holds it, SCHEDULED); a leased job's message was acked when its lease was taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing::{error, warn};

use super::canvas;
use super::outcome::{self, Outcome};
use crate::amqp;
use crate::celery::message::TaskMessage;
use crate::store::{InFlight, SharedText, Spawned, StoreError};
use crate::worker::context::{times_returned, SessionContext, DELIVERY_COUNT};
use crate::worker::lease::LeaseEnd;
use crate::worker::republish;

/// What becomes of one message; each step of the pipeline ends a delivery with at most one.
pub(super) enum Settlement {
    /// Done with: acked. Its job was final already, or the store holds it (SCHEDULED).
    Ack,
    /// Its job ended, or never will run: the end is committed and told, then the message is
    /// acked, or for a retry published again first.
    JobEnded(JobEnd),
    /// A stop interrupted its job, which must run again: the message goes back to its queue
    /// unacked; or, leased (acked already), is published again here, or by a reaper once the
    /// lease lapsed.
    Interrupted {
        msg: Arc<TaskMessage>,
        why: String,
        lease: LeaseEnd,
    },
    /// Back to its queue unacked, after a pause: the store or the broker failed it.
    GiveBack { id: String, why: String },
    /// It can never run: moved to `<queue>.dead` with the reason, then acked. Its job, when it
    /// is known (`(id, task)`), is recorded FAILURE first.
    DeadLetter {
        reason: String,
        job: Option<(SharedText, String)>,
    },
}

/// A job's end, to be committed before its message is settled.
pub(super) struct JobEnd {
    pub(super) msg: Arc<TaskMessage>,
    pub(super) id: SharedText,
    pub(super) outcome: Outcome,
    /// The tail of a command's output.
    pub(super) output: Option<String>,
    pub(super) lease: LeaseEnd,
    /// When it started running; `None`: it never ran.
    pub(super) started: Option<Instant>,
}

impl Settlement {
    pub(super) fn give_back(id: &str, why: String) -> Self {
        Self::GiveBack {
            id: id.to_string(),
            why,
        }
    }

    /// A message that is no job at all.
    pub(super) fn dead_letter(reason: String) -> Self {
        Self::DeadLetter { reason, job: None }
    }
}

/// Carries out `settlement` for `delivery`. `in_flight` is dropped once the job's end is
/// committed: until then, commits the writer makes wait for it (`store::Writer::in_flight`).
pub(super) async fn settle(
    ctx: &SessionContext,
    delivery: &Delivery,
    settlement: Settlement,
    in_flight: InFlight,
) {
    match settlement {
        Settlement::Ack => ctx.acks.ack(delivery.delivery_tag),
        Settlement::JobEnded(end) => conclude(ctx, delivery, end, in_flight).await,
        Settlement::Interrupted { msg, why, lease } => {
            let id = &msg.id;
            match lease {
                LeaseEnd::NotLeased => {
                    warn!("job {id}: {why}; not acked, it goes back to the queue and runs again");
                    record_given_back(ctx, id, &why).await;
                    return_to_queue(ctx, delivery).await;
                }
                LeaseEnd::HeldToEnd => {
                    // Its delivery was acked when the lease was taken: a fresh copy, no eta.
                    let mut again = (*msg).clone();
                    again.eta_ms = None;
                    let why = format!("given back by {}: {why}", ctx.worker.node);
                    republish::publish(ctx, &again, &why).await;
                }
                LeaseEnd::Lapsed => {
                    warn!("job {id}: {why}; its lease lapsed, a reaper publishes it again");
                }
            }
        }
        Settlement::GiveBack { id, why } => give_back(ctx, delivery, &id, &why).await,
        Settlement::DeadLetter { reason, job } => {
            if let Some((id, task)) = job {
                let failed = Outcome::Failure(reason.clone());
                let w = &*ctx.worker;
                failed.log(&w.node, &id, &task);
                let committed = commit_end(ctx, &id, &failed, None, Vec::new()).await;
                drop(in_flight);
                if let Err(e) = committed {
                    return give_back(ctx, delivery, &id, &e.to_string()).await;
                }
            }
            dead_letter(ctx, delivery, &reason).await;
        }
    }
}

/// A job's end: logged, committed, told; then its message acked, or published again for a
/// retry.
async fn conclude(ctx: &SessionContext, delivery: &Delivery, end: JobEnd, in_flight: InFlight) {
    let w = &*ctx.worker;
    let JobEnd {
        msg,
        id,
        outcome,
        output,
        lease,
        started,
    } = end;
    // The line goes before the commit: the writer flushes the log before each transaction, so
    // whoever sees the end in the store (`cm launch --wait`) finds its line in the log. Should
    // the commit fail, the next line says the job goes back to the queue.
    outcome.log(&w.node, &id, &msg.task);
    let spawned = match &outcome {
        Outcome::Success(result) => canvas::spawned(&w.cfg, &msg, canvas::End::Success(result)),
        Outcome::Failure(why) => canvas::spawned(&w.cfg, &msg, canvas::End::Failure(why)),
        Outcome::Retry { .. } | Outcome::Revoked { .. } => Vec::new(),
    };
    let committed = commit_end(ctx, &id, &outcome, output, spawned).await;
    drop(in_flight);
    if let Err(e) = committed {
        if lease.acked() {
            // Acked already: the lease, no longer renewed, lapses and a reaper publishes it.
            return error!("job {id}: {e}; its lease lapses and it runs again");
        }
        return give_back(ctx, delivery, &id, &e.to_string()).await;
    }
    if !matches!(outcome, Outcome::Retry { .. }) {
        w.released.notify_one();
    }
    let runtime = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    outcome.announce(ctx, &msg, runtime).await;
    match outcome {
        Outcome::Retry { wait, .. } => retry(ctx, delivery, &msg, wait, lease.acked()).await,
        _ if lease.acked() => {}
        _ => ctx.acks.ack(delivery.delivery_tag),
    }
}

/// The one transaction that stores a job's end (its final state, or RETRY). What a final state
/// releases is in this same transaction: the store's release trigger moves the jobs waiting on
/// it whose parents have now all ended as required into its outbox (and revokes the `--after`
/// children of a failed one), and the jobs its Celery canvas starts (`spawned`) are written
/// there with outbox rows; so they are released exactly when the end is durable, never before
/// it and never twice; any worker's `outbox` drain publishes them.
async fn commit_end(
    ctx: &SessionContext,
    id: &SharedText,
    outcome: &Outcome,
    output: Option<String>,
    spawned: Vec<Spawned>,
) -> Result<(), StoreError> {
    let w = &*ctx.worker;
    w.writer
        .commit(outcome.event(id, &w.node, output, spawned))
        .await
}

/// A retry: the message published again at once as its next attempt, its eta `wait` ahead, then
/// acked (`acked`: it was, when its lease was taken). The wait is the store's, as a countdown's
/// is: the worker that receives it records it SCHEDULED and acks it, and a scheduler publishes
/// it when due; no job slot or prefetch slot is held meanwhile.
async fn retry(
    ctx: &SessionContext,
    delivery: &Delivery,
    msg: &TaskMessage,
    wait: Duration,
    acked: bool,
) {
    let w = &*ctx.worker;
    let mut again = msg.clone();
    again.retries += 1;
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    again.eta_ms = (wait_ms > 0).then(|| crate::store::now_ms().saturating_add(wait_ms));
    let (body, props) = again.encode(&w.node);
    if let Err(e) = ctx
        .publisher
        .publish_confirmed(&w.queue.name, &body, props)
        .await
    {
        let why = format!("re-publishing for retry: {e}");
        if acked {
            return error!(
                "job {}: {why}; it stays RETRY in the store: run it again with cm call",
                msg.id
            );
        }
        return give_back(ctx, delivery, &msg.id, &why).await;
    }
    if !acked {
        ctx.acks.ack(delivery.delivery_tag);
    }
}

/// Returns a job to its queue unacked-for-good: it runs again, here or on another worker.
async fn give_back(ctx: &SessionContext, delivery: &Delivery, id: &str, why: &str) {
    error!("job {id}: {why}; not acked, returning it to the queue");
    record_given_back(ctx, id, why).await;
    // Not too hot a loop while the store or broker is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    return_to_queue(ctx, delivery).await;
}

/// Records job `id` as given back (PENDING, with why) before its message goes back: the store
/// says so rather than the state of a run that is over, and no run the message starts next
/// can be written before it. A store that is down cannot be told: its row keeps its last
/// state until a worker receives the job again (nothing writes it once the store is back).
async fn record_given_back(ctx: &SessionContext, id: &str, why: &str) {
    let w = &*ctx.worker;
    if let Err(e) = w.writer.commit(outcome::given_back(w, id, why)).await {
        warn!("job {id}: given back, but the status store was not told ({e}); it shows its last state until a worker receives it again");
    }
}

/// Gives a delivery back to its queue. One more return would reach the delivery limit: a
/// copy is published and the original acked instead, so that cm's own returns (the store
/// down, a stop) never use up the limit kept for jobs whose worker dies on them.
async fn return_to_queue(ctx: &SessionContext, delivery: &Delivery) {
    let w = &*ctx.worker;
    let limit = u64::from(w.queue.delivery_limit);
    let near = times_returned(delivery).is_some_and(|n| n + 1 >= limit);
    if near {
        let mut fresh = FieldTable::default();
        if let Some(headers) = delivery.properties.headers() {
            for (k, v) in headers.inner() {
                if k.as_str() != DELIVERY_COUNT {
                    fresh.insert(k.clone(), v.clone());
                }
            }
        }
        let props = delivery.properties.clone().with_headers(fresh);
        match ctx
            .publisher
            .publish_confirmed(&w.queue.name, &delivery.data, props)
            .await
        {
            Ok(()) => return ctx.acks.ack(delivery.delivery_tag),
            Err(e) => warn!(
                "publishing a fresh copy of a message near its delivery limit: {e}; returning it instead"
            ),
        }
    }
    ctx.acks.nack(delivery.delivery_tag, true);
}

/// Moves a message that can never run to `<queue>.dead`, with the reason, then acks it.
async fn dead_letter(ctx: &SessionContext, delivery: &Delivery, reason: &str) {
    let w = &*ctx.worker;
    let queue = &w.queue.name;
    let dead = format!("{queue}.dead");
    warn!("poison message on queue {queue}: {reason}; moved to {dead}");
    let declared = ctx
        .dead_queue
        .get_or_try_init(|| async {
            let channel = ctx.publisher.channel().await?;
            amqp::declare_dead_queue(&channel, &w.cfg.broker_url, queue, w.queue.quorum)
                .await
                .map(|_| ())
        })
        .await;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
    headers.insert("x-cm-reason".into(), text(reason));
    headers.insert("x-cm-queue".into(), text(queue));
    headers.insert("x-cm-worker".into(), text(&w.node));
    let props = delivery.properties.clone().with_headers(headers);
    let moved = match declared {
        Ok(()) => {
            ctx.publisher
                .publish_confirmed(&dead, &delivery.data, props)
                .await
        }
        Err(e) => Err(e),
    };
    match moved {
        Ok(()) => ctx.acks.ack(delivery.delivery_tag),
        Err(e) => {
            error!("could not move a poison message to {dead}: {e}; returning it to {queue}");
            // Not too hot a loop while the broker cannot take it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.acks.nack(delivery.delivery_tag, true);
        }
    }
}

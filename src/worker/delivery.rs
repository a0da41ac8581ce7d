//! One delivery's path: decode → record → run → settle. A message that is no job goes to the
//! dead-letter queue; a redelivered job already final is acked without running; anything else
//! runs, and its one [`Outcome`] says what the store records, what the log says and what follows.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::types::{AMQPValue, LongString};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tracing::{error, warn};

use super::acks::Acks;
use super::lease::{self, Held, Lease};
use super::outcome::Outcome;
use super::remote::Remote;
use super::revokes::{self, Revocations};
use super::running::RunningJob;
use super::schedule;
use super::stats::Counters;
use crate::amqp::{self, Publisher};
use crate::celery::event_format::TaskEvent;
use crate::celery::message::TaskMessage;
use crate::config::Config;
use crate::joblog;
use crate::jobs::cancel::Stops;
use crate::jobs::run::{Context, Verdict};
use crate::jobs::{self, Job};
use crate::store::{self, Event, Store, Writer};

/// What every job handler of a session shares.
pub(super) struct Ctx {
    pub(super) cfg: Config,
    /// `name@host`, shared by every event this worker sends.
    pub(super) node: store::SharedText,
    pub(super) queue: String,
    pub(super) retries: u32,
    /// A quorum queue (its `.dead` is one too).
    pub(super) quorum: bool,
    /// A message the broker returned this many times is dead-lettered, not run (quorum queues).
    pub(super) delivery_limit: u32,
    pub(super) retry_backoff: Duration,
    pub(super) publisher: Publisher,
    /// Settles this session's deliveries; handlers never ack on the channel themselves.
    pub(super) acks: Acks,
    pub(super) store: Store,
    pub(super) writer: Writer,
    pub(super) dead_declared: OnceCell<()>,
    pub(super) stats: Arc<Counters>,
    /// Ends running jobs early: a revoke with terminate, the end of the stop grace.
    pub(super) stops: Stops,
    /// Where commands write their `$CM_RESULT` files.
    pub(super) result_dir: PathBuf,
    /// The jobs this worker holds by lease (run past `lease_after`), renewed by `serve`.
    pub(super) held: Held,
    /// The revoked job ids (`revokes`): such a job is settled REVOKED without running.
    pub(super) revoked: Revocations,
    /// Running jobs, the Lamport clock and the event switch: what Celery's tools are told.
    pub(super) remote: Arc<Remote>,
}

/// One line in the worker's log for one job event (what a job prints lands here too).
pub(super) fn say(node: &str, id: &str, task: &str, event: &str) {
    joblog::line(&[node, " job ", id, " ", task, ": ", event]);
}

/// `in_flight`: held from when the delivery was taken until its final state is committed, so
/// that commits meanwhile wait for it (`store::Writer::hold`).
pub(super) async fn handle(
    ctx: &Ctx,
    delivery: Delivery,
    slot: OwnedSemaphorePermit,
    in_flight: store::InFlight,
) {
    if delivery.data.len() > ctx.cfg.max_message_bytes {
        let why = format!(
            "body of {} bytes, over [worker] max_message_bytes ({})",
            delivery.data.len(),
            ctx.cfg.max_message_bytes
        );
        return dead_letter(ctx, delivery, &why).await;
    }
    if let Some(n) = returned(&delivery).filter(|n| *n >= u64::from(ctx.delivery_limit)) {
        return over_the_limit(ctx, delivery, n).await;
    }
    let msg = match TaskMessage::decode(&delivery.properties, &delivery.data) {
        // Shared with the running-jobs registry (`inspect active`) while it runs: no copy.
        Ok(m) => Arc::new(m),
        Err(e) => return dead_letter(ctx, delivery, &e.to_string()).await,
    };
    let job = match Job::from_message(&msg, &ctx.cfg) {
        Ok(j) => j,
        Err(e) => return dead_letter(ctx, delivery, &e.to_string()).await,
    };
    let (node, id, task) = (&*ctx.node, msg.id.as_str(), msg.task.as_str());
    // One copy of the id for all of this job's events.
    let shared_id = store::SharedText::from(id);
    // Only a redelivery can be a job that already ran: look it up then, and not on the hot path.
    if delivery.redelivered {
        match ctx.store.state_of(id).await {
            Ok(Some(state)) if store::is_final(&state) => {
                return already_final(ctx, &delivery, shared_id, task, state).await
            }
            Ok(_) => {}
            Err(e) => return give_back(ctx, &delivery, id, &e.to_string()).await,
        }
    }
    if let Some(by) = ctx.revoked.revoked_by(id) {
        return revokes::settle_unrun(ctx, &msg, &job, &delivery, shared_id, &by).await;
    }
    // `expires` past: REVOKED unrun; `eta` ahead: SCHEDULED, held by the store, acked.
    if schedule::settles_early(ctx, &msg, &job, &delivery, &shared_id).await {
        return;
    }
    let redelivered = if delivery.redelivered {
        " (redelivered)"
    } else {
        ""
    };
    say(
        node,
        id,
        task,
        &format!("RECEIVED {}{redelivered}", job.describe()),
    );
    let now = store::now_ms();
    ctx.writer.send(Event::Received {
        job: jobs::record(&msg, Some(&job), &ctx.queue, None, now),
        worker: ctx.node.clone(),
        at: now,
    });
    let events = &ctx.remote.events;
    events.received(&msg, &delivery.properties);
    let started = Instant::now();
    // In `inspect active` from here until it ran, however this handler leaves.
    let active = ctx.remote.running.start(RunningJob {
        msg: msg.clone(),
        started: now as f64 / 1000.0,
        exchange: delivery.exchange.clone(),
        routing_key: delivery.routing_key.clone(),
        priority: delivery.properties.priority().unwrap_or(0),
        redelivered: delivery.redelivered,
    });
    state(ctx, &shared_id, task, Cow::Borrowed(store::STARTED));
    events.task(&TaskEvent::Started { uuid: id });
    let run = Context {
        id,
        queue: &ctx.queue,
        node,
        args: (&msg.args, &msg.kwargs),
        result_dir: &ctx.result_dir,
        cancel: ctx.stops.for_job(shared_id.clone()),
        time_limit: msg.time_limit.enforced(),
    };
    let running = job.run(
        &ctx.cfg,
        run,
        |step| state(ctx, &shared_id, task, step),
        |stream, line| say(node, id, task, &format!("{}: {line}", stream.label())),
    );
    let tag = delivery.delivery_tag;
    let (finish, lease) = lease::run_past(ctx, &shared_id, task, tag, running).await;
    // What it was asked (a terminate's signal), for its task-revoked event.
    let asked = ctx.stops.forget(id);
    // The next job may run while this one's final state is being committed.
    drop(slot);
    drop(active);
    if let Verdict::Interrupted(why) = &finish.verdict {
        return match lease {
            Lease::None => {
                warn!("job {id}: {why}; not acked, it goes back to the queue and runs again");
                return_to_queue(ctx, &delivery).await
            }
            Lease::Held => lease::hand_back(ctx, &msg, why).await,
            Lease::Lapsed => {
                warn!("job {id}: {why}; its lease lapsed, a reaper publishes it again")
            }
        };
    }

    let outcome = Outcome::of(finish.verdict, asked, msg.retries, ctx);
    // The line goes before the commit: the writer flushes the log before each transaction, so
    // whoever sees the final state in the store (`cm launch --wait`) finds its line in the log.
    // Should the commit fail, the next line says the job goes back to the queue.
    outcome.log(node, id, task, ctx.retries);
    // At least once: the ack goes out only after the final state is durable.
    let committed = ctx
        .writer
        .commit(outcome.event(&shared_id, &ctx.node, finish.output))
        .await;
    drop(in_flight);
    if let Err(e) = committed {
        if lease != Lease::None {
            // Acked already: the lease, no longer renewed, lapses and a reaper publishes it.
            return error!("job {id}: {e}; its lease lapses and it runs again");
        }
        return give_back(ctx, &delivery, id, &e.to_string()).await;
    }
    // Told once it is durable: a monitor never shows an end the store has not.
    outcome.send_event(events, id, started.elapsed().as_secs_f64());
    let settle = (lease == Lease::None).then_some(&delivery);
    outcome.follow_up(ctx, &msg, settle).await;
}

/// A redelivery of a job whose final state is stored: recorded and acked, not run again.
async fn already_final(
    ctx: &Ctx,
    delivery: &Delivery,
    id: store::SharedText,
    task: &str,
    state: String,
) {
    say(
        &ctx.node,
        &id,
        task,
        &format!("already {state}; acked without running again"),
    );
    let seen = Event::Redelivered {
        id: id.clone(),
        state,
        worker: ctx.node.clone(),
        at: store::now_ms(),
    };
    if let Err(e) = ctx.writer.commit(seen).await {
        warn!("recording the redelivery of job {id}: {e}");
    }
    ctx.acks.ack(delivery.delivery_tag);
}

/// Logs a state and queues it for the store (not awaited: the final state's commit covers it).
fn state(ctx: &Ctx, id: &store::SharedText, task: &str, state: Cow<'static, str>) {
    say(&ctx.node, id, task, &state);
    ctx.writer.send(Event::State {
        id: id.clone(),
        state,
        worker: ctx.node.clone(),
        at: store::now_ms(),
    });
}

/// Returns a job to its queue unacked-for-good: it runs again, here or on another worker.
pub(super) async fn give_back(ctx: &Ctx, delivery: &Delivery, id: &str, why: &str) {
    error!("job {id}: {why}; not acked, returning it to the queue");
    // Not too hot a loop while the store or broker is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    return_to_queue(ctx, delivery).await;
}

/// How many times the broker returned this message before: a quorum queue's
/// `x-delivery-count` (a classic queue keeps no count).
fn returned(delivery: &Delivery) -> Option<u64> {
    let count = delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(DELIVERY_COUNT)?;
    match *count {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(n)),
        AMQPValue::LongUInt(n) => Some(u64::from(n)),
        AMQPValue::Timestamp(n) => Some(n),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

const DELIVERY_COUNT: &str = "x-delivery-count";

/// Gives a delivery back to its queue. One more return would reach the delivery limit: a
/// copy is published and the original acked instead, so that cm's own returns (the store
/// down, a stop) never use up the limit kept for jobs whose worker dies on them.
async fn return_to_queue(ctx: &Ctx, delivery: &Delivery) {
    let near = returned(delivery).is_some_and(|n| n + 1 >= u64::from(ctx.delivery_limit));
    if near {
        let mut fresh = lapin::types::FieldTable::default();
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
            .publish_confirmed(&ctx.queue, &delivery.data, props)
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

/// A message whose worker died on it `delivery_limit` times (it was returned that often):
/// its job is recorded FAILURE with why, and the message goes to the dead letters.
async fn over_the_limit(ctx: &Ctx, delivery: Delivery, returned: u64) {
    let why = format!(
        "returned to queue {} {returned} times without an end (its worker died each time): \
         over [queues.{}] delivery_limit {}; moved to the dead letters",
        ctx.queue, ctx.queue, ctx.delivery_limit
    );
    if let Ok(msg) = TaskMessage::decode(&delivery.properties, &delivery.data) {
        say(&ctx.node, &msg.id, &msg.task, &format!("FAILURE {why}"));
        let failed = Event::Finished {
            id: store::SharedText::from(msg.id.as_str()),
            state: store::FAILURE,
            worker: ctx.node.clone(),
            at: store::now_ms(),
            result: None,
            error: Some(why.clone()),
            output: None,
        };
        if let Err(e) = ctx.writer.commit(failed).await {
            return give_back(ctx, &delivery, &msg.id, &e.to_string()).await;
        }
    }
    dead_letter(ctx, delivery, &why).await;
}

/// Moves a message that can never run to `<queue>.dead`, with the reason, then acks it.
async fn dead_letter(ctx: &Ctx, delivery: Delivery, reason: &str) {
    let dead = format!("{}.dead", ctx.queue);
    warn!(
        "poison message on queue {}: {reason}; moved to {dead}",
        ctx.queue
    );
    let declared = ctx
        .dead_declared
        .get_or_try_init(|| async {
            let channel = ctx.publisher.channel().await?;
            amqp::declare_dead_queue(&channel, &ctx.cfg.broker_url, &ctx.queue, ctx.quorum)
                .await
                .map(|_| ())
        })
        .await;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
    headers.insert("x-cm-reason".into(), text(reason));
    headers.insert("x-cm-queue".into(), text(&ctx.queue));
    headers.insert("x-cm-worker".into(), text(&ctx.node));
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
            error!(
                "could not move a poison message to {dead}: {e}; returning it to {}",
                ctx.queue
            );
            // Not too hot a loop while the broker cannot take it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.acks.nack(delivery.delivery_tag, true);
        }
    }
}

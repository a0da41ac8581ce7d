//! The third step: the job runs. RECEIVED and STARTED are recorded, it shows in `inspect
//! active` while it runs, each step of its kind is recorded as it begins, and should it still
//! run after `[worker] lease_after_seconds`, the store takes it over by a lease and its message
//! is acked (`lease`): the broker's consumer_timeout never sees it.

use std::borrow::Cow;
use std::future::Future;
use std::time::Instant;

use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use super::outcome::{self, Outcome, Retry};
use super::screen::ReceivedJob;
use super::settle::{JobEnd, Settlement};
use crate::celery::event_format::TaskEvent;
use crate::celery::message::TaskMessage;
use crate::config::policy::RetryPolicy;
use crate::jobs::run::{Context, Finish, Verdict};
use crate::jobs::Job;
use crate::store::{self, SharedText};
use crate::worker::context::{job_line, SessionContext, WorkerState};
use crate::worker::lease::{millis, LeaseEnd};
use crate::worker::running::RunningJob;

/// Runs the job in `received`, holding its job `slot` until it ran; ends with how it ended.
/// `held`: its RECEIVED was recorded while it waited for the slot.
pub(super) async fn run(
    ctx: &SessionContext,
    delivery: &Delivery,
    received: ReceivedJob,
    held: bool,
    slot: OwnedSemaphorePermit,
) -> Settlement {
    let w = &*ctx.worker;
    let ReceivedJob { msg, job, id } = received;
    let (node, task) = (&*w.node, msg.task.as_str());
    let now = store::now_ms();
    if !held {
        record_received(w, delivery, (&msg, &job, &id), now, "");
    }
    let events = &w.remote.events;
    events.received(&msg, &delivery.properties);
    let started = Instant::now();
    // In `inspect active` from here until it ran, however this step leaves.
    let active = w
        .remote
        .running
        .start(RunningJob::of(msg.clone(), delivery, now));
    step(w, &id, task, Cow::Borrowed(store::STARTED));
    events.task(&TaskEvent::Started { uuid: &id });
    let context = Context {
        id: &id,
        queue: &w.queue.name,
        node,
        args: (&msg.args, &msg.kwargs),
        result_dir: &w.result_dir,
        cancel: w.stops.for_job(id.clone()),
        time_limit: msg.time_limit.enforced(),
    };
    let running = job.run(
        &w.cfg,
        context,
        |state| step(w, &id, task, state),
        |stream, line| job_line(node, &id, task, &format!("{}: {line}", stream.label())),
    );
    let (finish, lease) = run_leased(ctx, &id, task, delivery.delivery_tag, running).await;
    // What it was asked (a terminate's signal), for its task-revoked event.
    let asked = w.stops.forget(&id);
    // The next job may run while this one's end is being committed.
    drop(slot);
    drop(active);
    let outcome = match finish.verdict {
        Verdict::Interrupted(why) => return Settlement::Interrupted { msg, why, lease },
        verdict => {
            let policy = job.policy(&w.cfg).map(|p| &p.retry);
            let retry = Retry {
                policy: policy.unwrap_or(&RetryPolicy::QUEUE_DEFAULTS),
                queue: &w.queue,
            };
            Outcome::of(verdict, asked, msg.retries, retry, finish.exit_code)
        }
    };
    Settlement::JobEnded(JobEnd {
        msg,
        id,
        outcome,
        output: finish.output,
        lease,
        started: Some(started),
    })
}

/// Logs the job RECEIVED by this worker at `now` (with `note` after the line) and queues the
/// event for the store: as its run begins, or earlier while it is held for a slot.
pub(super) fn record_received(
    w: &WorkerState,
    delivery: &Delivery,
    (msg, job, id): (&TaskMessage, &Job, &str),
    now: i64,
    note: &str,
) {
    let redelivered = if delivery.redelivered {
        " (redelivered)"
    } else {
        ""
    };
    job_line(
        &w.node,
        id,
        &msg.task,
        &format!("RECEIVED {}{redelivered}{note}", job.describe()),
    );
    w.writer.send(outcome::received(w, msg, job, now));
}

/// Logs a state on the job's way and queues it for the store.
fn step(w: &WorkerState, id: &SharedText, task: &str, state: Cow<'static, str>) {
    job_line(&w.node, id, task, &state);
    w.writer.send(outcome::progress(w, id, state));
}

/// Runs a job to its end (`job`); should it still run after `[worker] lease_after_seconds`, a
/// lease is committed and delivery `tag` acked. Returns how it ended and whether it was
/// leased: then its delivery is settled already, and what follows must not ack or nack it.
async fn run_leased(
    ctx: &SessionContext,
    id: &SharedText,
    task: &str,
    tag: u64,
    job: impl Future<Output = Finish>,
) -> (Finish, LeaseEnd) {
    let w = &*ctx.worker;
    let mut job = std::pin::pin!(job);
    let timer = tokio::time::sleep(w.cfg.lease_after);
    let mut timer = std::pin::pin!(timer);
    let mut leased = false;
    let finish = loop {
        tokio::select! {
            biased;
            finish = &mut job => break finish,
            () = &mut timer, if !leased => {
                if take_lease(w, id, task).await {
                    ctx.acks.ack(tag);
                    leased = true;
                } else {
                    // The store is down: the delivery stays unacked, and the next try comes
                    // before the broker's consumer_timeout, which is minutes.
                    let next = tokio::time::Instant::now() + w.cfg.lease / 3;
                    timer.as_mut().reset(next);
                }
            }
        }
    };
    let lease = match (leased, leased && w.leases.remove(id)) {
        (false, _) => LeaseEnd::NotLeased,
        (true, true) => LeaseEnd::HeldToEnd,
        (true, false) => LeaseEnd::Lapsed,
    };
    (finish, lease)
}

/// Commits a lease on job `id` for this worker; true once it is durable.
async fn take_lease(w: &WorkerState, id: &SharedText, task: &str) -> bool {
    let at = store::now_ms();
    let until = at.saturating_add(millis(w.cfg.lease));
    // Held before the commit, so that no renewal round can miss it.
    w.leases.insert(id.clone());
    match w.writer.commit(outcome::leased(w, id, at, until)).await {
        Ok(()) => {
            job_line(
                &w.node,
                id,
                task,
                &format!(
                    "LEASED: running past {:?}, acked; held by a lease in the store",
                    w.cfg.lease_after
                ),
            );
            true
        }
        Err(e) => {
            w.leases.remove(id);
            warn!("job {id}: cannot take a lease ({e}); it stays unacked on the broker");
            false
        }
    }
}

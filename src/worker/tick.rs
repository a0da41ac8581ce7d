//! The schedules' tick, run by every worker's session beside the eta scheduler: it sleeps
//! until the next slot of any schedule (a second at most, to see pauses and other hosts'
//! firings), then fires what `schedules::plan` says in one store transaction per schedule
//! (`Store::fire`: of hosts ticking at once, one fires a slot) and publishes the jobs. A
//! firing whose job was not published (its firer died, the broker refused) is published by
//! the next sweep of any worker once its firer's claim ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::context::{job_line, log_time, SessionContext};
use crate::amqp;
use crate::celery::message::TaskMessage;
use crate::schedules::{self, Overlap, Schedule};
use crate::store::{self, Fired, Firing, JobRow, NewJob};

/// The longest sleep between ticks: how soon a pause, a resume, or another host's firing is seen.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// A firer alone publishes its jobs this long; after that any worker's sweep may.
const SEND_CLAIM_MS: i64 = 10_000;
/// How often each worker looks for firings not published.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Firings published per sweep.
const SWEEP_BATCH: i64 = 100;

/// Ticks the configured schedules until the session ends.
pub(super) async fn run(ctx: Arc<SessionContext>) {
    let w = &*ctx.worker;
    let names: Vec<String> = w.cfg.schedules.keys().cloned().collect();
    if names.is_empty() {
        return;
    }
    let mut declared = HashSet::from([w.queue.name.clone()]);
    let mut failing = false;
    let mut swept = tokio::time::Instant::now();
    loop {
        let states = match w.store.schedule_states(&names).await {
            Ok(states) => states,
            Err(e) => {
                if !failing {
                    warn!("schedules: reading their state: {e}; trying again each second");
                }
                failing = true;
                tokio::time::sleep(MAX_SLEEP).await;
                continue;
            }
        };
        failing = false;
        let mut wake = store::now_ms() + millis(MAX_SLEEP);
        for schedule in w.cfg.schedules.values() {
            let Some(state) = states.iter().find(|s| s.name == schedule.name) else {
                continue;
            };
            if state.paused {
                continue;
            }
            let now = store::now_ms();
            let mut cursor = state.cursor_ms;
            if let Some(plan) = schedules::plan(schedule, cursor, now) {
                cursor = plan.cursor;
                fire(&ctx, &mut declared, schedule, state.cursor_ms, plan).await;
            }
            if let Some(next) = schedule.next_after(cursor.max(now)) {
                wake = wake.min(next);
            }
        }
        if swept.elapsed() >= SWEEP_EVERY {
            sweep(&ctx, &mut declared).await;
            swept = tokio::time::Instant::now();
        }
        let sleep = (wake - store::now_ms()).max(1);
        tokio::time::sleep(Duration::from_millis(sleep.unsigned_abs())).await;
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Applies `plan` (made from `from_cursor`) and publishes the jobs it made.
async fn fire(
    ctx: &SessionContext,
    declared: &mut HashSet<String>,
    schedule: &Schedule,
    from_cursor: i64,
    plan: schedules::Plan,
) {
    let w = &*ctx.worker;
    let now = store::now_ms();
    let firing = Firing {
        schedule: schedule.name.clone(),
        from_cursor: Some(from_cursor),
        to_cursor: plan.cursor,
        missed: plan.missed,
        overlap_skip: schedule.overlap == Overlap::Skip,
        slots: plan
            .fire
            .iter()
            .map(|(slot, how)| (*slot, how.as_str(), job_of(schedule, now)))
            .collect(),
        send_until: now + SEND_CLAIM_MS,
    };
    let jobs = match w.store.fire(&firing).await {
        Ok(Fired::Jobs(jobs)) => jobs,
        Ok(Fired::Raced) => return,
        Err(e) => {
            warn!(
                "schedule {}: firing slot {}: {e}; the next tick tries again",
                schedule.name,
                log_time(plan.cursor)
            );
            return;
        }
    };
    if plan.missed > 0 {
        info!(
            "schedule {}: {} slot(s) missed before {} (catch_up = {:?})",
            schedule.name,
            plan.missed,
            log_time(plan.cursor),
            schedule.catch_up
        );
    }
    let mut sent = Vec::with_capacity(jobs.len());
    for job in jobs {
        if publish(ctx, declared, &job.id, &job.task, &job.queue, &job.args).await {
            sent.push(job.id);
        }
    }
    if let Err(e) = w.store.firings_sent(&sent).await {
        warn!(
            "schedule {}: published, but not recorded as published: {e}",
            schedule.name
        );
    }
}

/// A new PENDING job of `schedule`.
fn job_of(schedule: &Schedule, now: i64) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        task: schedule.task.clone(),
        queue: schedule.queue.clone(),
        args: schedule.args.clone(),
        submitted_ms: now,
        ..NewJob::default()
    }
}

/// Publishes the jobs of firings whose firer did not (in time).
async fn sweep(ctx: &SessionContext, declared: &mut HashSet<String>) {
    let w = &*ctx.worker;
    let now = store::now_ms();
    let rows: Vec<JobRow> = match w
        .store
        .claim_unsent(now, now + SEND_CLAIM_MS, SWEEP_BATCH)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            warn!("schedules: looking for firings not published: {e}");
            return;
        }
    };
    let mut sent = Vec::with_capacity(rows.len());
    for row in rows {
        let j = &row.job;
        if publish(ctx, declared, &j.id, &j.task, &j.queue, &j.args).await {
            info!(
                "job {}: a schedule's firing published by {} after its firer did not",
                j.id, w.node
            );
            sent.push(j.id.clone());
        }
    }
    if let Err(e) = w.store.firings_sent(&sent).await {
        warn!("schedules: published, but not recorded as published: {e}");
    }
}

/// Publishes job `id` (confirmed, mandatory) to `queue`, declared first on this session. False,
/// with a warning, when it could not be: its firing stays unpublished for a sweep.
async fn publish(
    ctx: &SessionContext,
    declared: &mut HashSet<String>,
    id: &str,
    task: &str,
    queue: &str,
    args: &str,
) -> bool {
    let w = &*ctx.worker;
    let (args, kwargs): (
        Vec<serde_json::Value>,
        serde_json::Map<String, serde_json::Value>,
    ) = match serde_json::from_str(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            warn!("job {id}: its stored arguments are not [args, kwargs] ({e}); not published");
            return false;
        }
    };
    if !declared.contains(queue) {
        let Some(config) = w.cfg.queues.iter().find(|q| q.name == queue) else {
            warn!("job {id}: queue {queue} is not in this worker's config; not published");
            return false;
        };
        let declare = match ctx.publisher.channel().await {
            Ok(channel) => amqp::declare_work_queue(&channel, &w.cfg.broker_url, config)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = declare {
            warn!("job {id}: declaring queue {queue}: {e}; a sweep tries again");
            return false;
        }
        declared.insert(queue.to_string());
    }
    let mut msg = TaskMessage::new(task, args, kwargs);
    msg.id = id.to_string();
    let (body, props) = msg.encode(&w.node);
    match ctx.publisher.publish_confirmed(queue, &body, props).await {
        Ok(()) => {
            job_line(&w.node, id, task, "PENDING: a schedule's firing, published");
            true
        }
        Err(e) => {
            warn!("job {id}: publishing a schedule's firing: {e}; a sweep tries again");
            false
        }
    }
}

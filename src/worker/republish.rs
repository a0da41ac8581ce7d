//! Jobs the store holds go back to the broker. Each session runs two loops over its queue:
//!
//! - the scheduler ([`schedule`]): a job received before its eta was held SCHEDULED by the
//!   store (`delivery::admit`); when due, one worker claims it in one statement (of racing
//!   workers exactly one gets each) and publishes it again, with the same id and no eta. The
//!   claim is a lease: should its claimer die before publishing, a reaper publishes it instead.
//! - the reaper ([`reap`]): a job whose lease lapsed (its worker died mid-job) is claimed
//!   atomically and published again, so it runs again on whichever worker takes it.
//!
//! Either way the job is recorded REQUEUED, and then runs as any job does.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::context::{job_line, log_time, SessionContext};
use super::lease::millis;
use crate::celery::message::TaskMessage;
use crate::store;

/// How often the scheduler looks for due jobs: a job runs at most about this late (plus the
/// publish and the delivery).
const SCHEDULE_POLL: Duration = Duration::from_millis(500);
/// Due jobs claimed per look; more wait for the next.
const DUE_BATCH: i64 = 100;
/// Lapsed leases claimed per look.
const LAPSED_BATCH: i64 = 100;

/// Publishes again the due SCHEDULED jobs of this session's queue, every [`SCHEDULE_POLL`],
/// until the session ends.
pub(super) async fn schedule(ctx: Arc<SessionContext>) {
    let w = &*ctx.worker;
    let mut failing = false;
    loop {
        tokio::time::sleep(SCHEDULE_POLL).await;
        let now = store::now_ms();
        let until = now.saturating_add(millis(w.cfg.lease));
        let due = match w
            .store
            .claim_due(&w.queue.name, &w.node, now, until, DUE_BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                if !failing {
                    warn!(
                        "looking for due scheduled jobs on queue {}: {e}",
                        w.queue.name
                    );
                }
                failing = true;
                continue;
            }
        };
        failing = false;
        for job in due {
            let eta = job.job.options.eta_ms.map_or_else(|| "?".into(), log_time);
            publish_again(&ctx, &job, &format!("eta {eta} reached")).await;
        }
    }
}

/// Reaps the lapsed leases of this session's queue, every half `lease`, until the session
/// ends: each one this worker claims is published again.
pub(super) async fn reap(ctx: Arc<SessionContext>) {
    let w = &*ctx.worker;
    let lease = w.cfg.lease;
    loop {
        tokio::time::sleep(lease / 2).await;
        let now = store::now_ms();
        let lapsed = match w
            .store
            .lapsed_leases(&w.queue.name, now, LAPSED_BATCH)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                warn!("looking for lapsed leases on queue {}: {e}", w.queue.name);
                continue;
            }
        };
        for row in lapsed {
            let until = store::now_ms().saturating_add(millis(lease));
            match w.store.claim_lapsed(&row.job.id, &w.node, now, until).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!("claiming the lapsed lease of job {}: {e}", row.job.id);
                    continue;
                }
            }
            let owner = row.lease_owner.as_deref().unwrap_or("?");
            let why = format!("the lease of {owner} lapsed");
            publish_again(&ctx, &row, &why).await;
        }
    }
}

/// Publishes job `job` again from what the store keeps of it: the message as first received
/// (same id, task, arguments and retries, expires, time limits, reply address, Celery's chain,
/// links and group; no eta, it is due), then records it REQUEUED. A client waiting on `.get()`
/// over rpc:// gets the result of the run this starts.
pub(super) async fn publish_again(ctx: &SessionContext, row: &store::JobRow, why: &str) {
    match crate::jobs::stored_message(row) {
        Ok(msg) => publish(ctx, &msg, why).await,
        Err(e) => warn!(
            "job {}: {why}, but it cannot be published again: {e:#}",
            row.job.id
        ),
    }
}

/// Publishes `msg` (confirmed), then records it REQUEUED. Should the publish fail, the job's
/// lease lapses and a reaper tries again.
pub(super) async fn publish(ctx: &SessionContext, msg: &TaskMessage, why: &str) {
    let w = &*ctx.worker;
    let (id, task) = (msg.id.as_str(), msg.task.as_str());
    let (body, props) = msg.encode(&w.node);
    match ctx
        .publisher
        .publish_confirmed(&w.queue.name, &body, props)
        .await
    {
        Ok(()) => {
            let detail = format!("{why}; published again by {}", w.node);
            job_line(&w.node, id, task, &format!("REQUEUED: {detail}"));
            if let Err(e) = w.store.requeued(id, &w.node, &detail).await {
                warn!("job {id}: published again, but not recorded as requeued: {e}");
            }
            info!("job {id}: {detail}");
        }
        Err(e) => warn!(
            "job {id}: {why}, but publishing it again failed: {e}; once its lease lapses a reaper tries again"
        ),
    }
}

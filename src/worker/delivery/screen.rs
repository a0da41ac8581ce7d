//! The first step: is this message a job this worker can run? One over `[worker]
//! max_message_bytes`, one a quorum queue returned `delivery_limit` times (its worker died on
//! it each time), one that is no Celery task message, or one whose task is unknown here or
//! whose arguments do not bind, can never run: it goes to the dead letters, with why.

use std::sync::Arc;

use lapin::message::Delivery;

use super::settle::Settlement;
use crate::celery::message::TaskMessage;
use crate::jobs::Job;
use crate::store::SharedText;
use crate::worker::context::{times_returned, SessionContext};

/// A message that is a job: decoded, its task known and its arguments bound.
pub(super) struct ReceivedJob {
    /// Shared with the running-jobs registry (`inspect active`) while it runs: no copy.
    pub(super) msg: Arc<TaskMessage>,
    pub(super) job: Job,
    /// One copy of the id for all of this job's events.
    pub(super) id: SharedText,
}

/// The job in `delivery`, or the dead letter it is.
pub(super) fn screen(ctx: &SessionContext, delivery: &Delivery) -> Result<ReceivedJob, Settlement> {
    let w = &*ctx.worker;
    if delivery.data.len() > w.cfg.max_message_bytes {
        let reason = format!(
            "body of {} bytes, over [worker] max_message_bytes ({})",
            delivery.data.len(),
            w.cfg.max_message_bytes
        );
        return Err(Settlement::DeadLetter { reason, job: None });
    }
    let limit = w.queue.delivery_limit;
    if let Some(n) = times_returned(delivery).filter(|n| *n >= u64::from(limit)) {
        return Err(over_the_limit(ctx, delivery, n));
    }
    let msg = match TaskMessage::decode(&delivery.properties, &delivery.data) {
        Ok(m) => Arc::new(m),
        Err(e) => return Err(Settlement::dead_letter(e.to_string())),
    };
    let job = match Job::from_message(&msg, &w.cfg) {
        Ok(j) => j,
        Err(e) => return Err(Settlement::dead_letter(e.to_string())),
    };
    let id = SharedText::from(msg.id.as_str());
    Ok(ReceivedJob { msg, job, id })
}

/// A message whose worker died on it `delivery_limit` times (it was returned that often): its
/// job, if it decodes, is recorded FAILURE with why, and the message goes to the dead letters.
fn over_the_limit(ctx: &SessionContext, delivery: &Delivery, returned: u64) -> Settlement {
    let queue = &ctx.worker.queue;
    let reason = format!(
        "returned to queue {} {returned} times without an end (its worker died each time): \
         over [queues.{}] delivery_limit {}; moved to the dead letters",
        queue.name, queue.name, queue.delivery_limit
    );
    let job = TaskMessage::decode(&delivery.properties, &delivery.data)
        .ok()
        .map(|msg| (SharedText::from(msg.id.as_str()), msg.task));
    Settlement::DeadLetter { reason, job }
}

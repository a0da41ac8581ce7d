//! The outbox: jobs the store released (every parent ended as required, or a retry, or the
//! next step of a Celery chain) wait there, PENDING, until someone publishes them; and the
//! rpc:// replies of jobs a failed chain step ended at once wait there until someone sends
//! them. Every worker, of any queue on any host, drains it;
//! a command publishes at once the jobs it released itself. A row is claimed before its job is
//! published and deleted after: a publisher that dies between the commit and the publish
//! leaves the row (or its claim lapses) for the next one. Should it die between the publish
//! and the delete, the job is published twice: the second delivery finds it final, or running,
//! and the store's first-final-state rule keeps one end.

use std::time::Duration;

use lapin::types::AMQPValue;
use tracing::{info, warn};

use crate::amqp::Publisher;
use crate::celery::rpc;
use crate::jobs;
use crate::store::{self, Store, StoreError, PENDING};

/// The header that marks a message published from the outbox: a worker that receives one
/// (not redelivered) checks the store first, so that a second publish of a released job (its
/// publisher died between the publish and the row's delete) is acked unrun.
pub const RELEASED_HEADER: &str = "x-cm-released";

/// Rows claimed per round.
const BATCH: i64 = 200;

/// Publishes the jobs of claimable outbox rows (`only`: just these), claiming each for `claim`
/// (a claim that outlives it lapses, and another publisher takes the row), as `node`. Returns
/// how many were published; a job that could not be is left to a later round, by anyone.
pub async fn drain(
    store: &Store,
    publisher: &Publisher,
    node: &str,
    claim: Duration,
    only: Option<&[String]>,
) -> Result<usize, StoreError> {
    let mut published = 0;
    loop {
        let now = store::now_ms();
        let until = now.saturating_add(i64::try_from(claim.as_millis()).unwrap_or(i64::MAX));
        let rows = store.claim_outbox(node, now, until, BATCH, only).await?;
        let full = rows.len() as i64 >= BATCH;
        for row in rows {
            let id = &row.job.id;
            if row.state != PENDING {
                // Ended without running (the rest of a failed chain, a step no queue takes, a
                // job revoked since it was released): its client learns it, if one waits.
                if let Some(reply_to) = row.job.options.reply_to.as_deref() {
                    if store::is_final(&row.state) && !reply(publisher, &row, reply_to).await {
                        // The broker failed it: the row stays, its claim lapses, and the next
                        // round tries again.
                        continue;
                    }
                }
                store.outbox_published(id).await?;
                continue;
            }
            let msg = match jobs::stored_message(&row) {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(
                        "job {id} is due, but cannot be published: {e:#}; dropped from the outbox"
                    );
                    store.outbox_published(id).await?;
                    continue;
                }
            };
            let (body, props) = msg.encode(node);
            let mut headers = props.headers().clone().unwrap_or_default();
            headers.insert(RELEASED_HEADER.into(), AMQPValue::Boolean(true));
            let props = props.with_headers(headers);
            match publisher
                .publish_confirmed(&row.job.queue, &body, props)
                .await
            {
                Ok(()) => {
                    store.outbox_published(id).await?;
                    published += 1;
                    info!("job {id}: due, published to {} by {node}", row.job.queue);
                }
                Err(e) => warn!(
                    "job {id} is due, but publishing it to {} failed: {e}; it stays in the outbox for the next try",
                    row.job.queue
                ),
            }
        }
        if !full || only.is_some() {
            return Ok(published);
        }
    }
}

/// The rpc:// reply of a job that ended without running, to the client waiting at `reply_to`.
/// Whether it is done with: sent, or returned by the broker (a client gone takes its queue with
/// it; the store keeps the end).
async fn reply(publisher: &Publisher, row: &store::JobRow, reply_to: &str) -> bool {
    let id = &row.job.id;
    let (status, result) =
        rpc::status_and_result(&row.state, row.result.as_deref(), row.error.as_deref());
    let (body, props) = rpc::reply(id, id, status, result);
    match publisher.publish_confirmed(reply_to, &body, props).await {
        Ok(()) => {
            info!("job {id}: {status}, its result sent to {reply_to}");
            true
        }
        Err(crate::amqp::BrokerError::Returned { .. }) => true,
        Err(e) => {
            warn!("job {id}: sending its {status} to {reply_to}: {e}; tried again later");
            false
        }
    }
}

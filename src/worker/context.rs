//! What every floor of a worker shares, below all of them: the worker's state, which lasts
//! across its broker sessions; one session's context on top of it; the job lines of the
//! worker's log; a delivery's return count. It imports none of the floors (session, delivery
//! steps): they import it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use tokio::sync::OnceCell;

use super::acks::Acks;
use super::lease::LeasedJobs;
use super::remote::Remote;
use super::revokes::Revocations;
use super::stats::Counters;
use crate::amqp::{Brokers, Publisher};
use crate::config::{Config, QueueConfig};
use crate::joblog;
use crate::jobs::cancel::Stops;
use crate::store::{SharedText, Store, Writer};

/// What a worker keeps for its whole life, whatever its broker connection does.
pub(super) struct WorkerState {
    pub(super) cfg: Config,
    /// `name@host`, shared by every event this worker sends.
    pub(super) node: SharedText,
    /// The queue it consumes, with that queue's settings (retries, delivery limit, quorum).
    pub(super) queue: QueueConfig,
    pub(super) store: Store,
    /// Group commits to the store; a job's final state is durable once `commit` returns.
    pub(super) writer: Writer,
    /// Jobs done and failed.
    pub(super) stats: Arc<Counters>,
    /// Ends running jobs early: a revoke with terminate, a lapsed lease, the stop grace's end.
    pub(super) stops: Stops,
    /// The jobs it holds by lease (run past `lease_after`), renewed by `lease::renew`.
    pub(super) leases: LeasedJobs,
    /// The revoked job ids, kept current by `revokes::spawn`: such a job never runs.
    pub(super) revoked: Revocations,
    /// Running jobs, the Lamport clock and the event switch: what Celery's tools are told.
    pub(super) remote: Arc<Remote>,
    /// Where commands write their `$CM_RESULT` files.
    pub(super) result_dir: PathBuf,
    /// `[broker] url`: each session connects to the node reached last, or the next after a loss.
    pub(super) brokers: Brokers,
    /// Told when this worker committed a final state, which may have released jobs into the
    /// store's outbox: the session's `outbox` drain looks at once.
    pub(super) released: Arc<tokio::sync::Notify>,
}

/// One broker session's context: the worker's state, and what lives on this connection.
pub(super) struct SessionContext {
    pub(super) worker: Arc<WorkerState>,
    /// Confirmed publishes: retries, dead letters, jobs published again, rpc:// replies.
    pub(super) publisher: Publisher,
    /// Settles this session's deliveries; no step acks on the channel itself.
    pub(super) acks: Acks,
    /// `<queue>.dead`, declared on this connection at its first dead letter.
    pub(super) dead_queue: OnceCell<()>,
}

/// Writes one line for one job event to the worker's log (`[time] node job id task: event`);
/// what a job prints lands there too.
pub(super) fn job_line(node: &str, id: &str, task: &str, event: &str) {
    joblog::line(&[node, " job ", id, " ", task, ": ", event]);
}

/// A time in ms since the epoch as the log and the store show it (RFC 3339, UTC).
pub(super) fn log_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The header in which a quorum queue counts how often it returned a message.
pub(super) const DELIVERY_COUNT: &str = "x-delivery-count";

/// How many times the broker returned this message before: a quorum queue's
/// `x-delivery-count` (a classic queue keeps no count).
pub(super) fn times_returned(delivery: &Delivery) -> Option<u64> {
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

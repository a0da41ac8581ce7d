//! What this worker tells others over the broker about itself: today its answer to the
//! `cm.control` ping of `cm queue status --all` (the exchange and wire format are
//! `crate::inspect`'s). Celery's remote control (the pidbox: ping, stats, revoke, shutdown) and
//! its events (`celeryev`) belong here too; each gets the session's connection, as this does.

use std::sync::Arc;

use crate::broker::BrokerError;
use crate::config::{Config, WorkerRef};
use crate::inspect::{answer_pings, RemoteWorker};

use super::stats::Counters;

/// Answers pings for this worker's queue on `conn` until the connection ends.
pub(super) async fn answer(
    conn: &lapin::Connection,
    cfg: &Config,
    worker: WorkerRef<'_>,
    stats: &Arc<Counters>,
) -> Result<(), BrokerError> {
    let (node, name, host, queue) = (
        cfg.node_name(worker.name),
        worker.name.to_string(),
        cfg.node_host.clone(),
        worker.queue.name.clone(),
    );
    let stats = stats.clone();
    let status = move || {
        let me = nix::unistd::Pid::this();
        let s = stats.snapshot();
        RemoteWorker {
            node: node.clone(),
            name: name.clone(),
            host: host.clone(),
            queue: queue.clone(),
            pid: std::process::id(),
            state: "running".into(),
            uptime_seconds: crate::control::procs::uptime(me).map(|d| d.as_secs()),
            memory_bytes: crate::control::procs::rss_bytes(me),
            jobs_done: s.jobs_done,
            jobs_failed: s.jobs_failed,
        }
    };
    answer_pings(conn, &cfg.broker_url, worker.queue.name.clone(), status).await
}

//! A worker's wiring and shutdown: open the store, start what lasts across broker sessions
//! (lease renewal, the revoke poller, the remote side), run the sessions (`session`), and on
//! shutdown let running jobs finish within the stop grace, then close. [`serve`] runs one
//! worker so inside the caller's tokio runtime; the process entry (`setup::run`) wraps it
//! with the pid lock, the readiness pipe and the signals.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::{info, warn};

use super::context::WorkerState;
use super::flow;
use super::lease::{self, LeasedJobs};
use super::remote::Remote;
use super::revokes::{self, Revoker};
use super::session::Sessions;
use super::shutdown::Shutdown;
use super::stats::Counters;
use crate::amqp::Brokers;
use crate::config::{Config, WorkerRef};
use crate::exit::CmError;
use crate::jobs::cancel::Stops;
use crate::store::Store;

/// `worker-offline` goes out within this at shutdown, or not at all.
const OFFLINE_WITHIN: Duration = Duration::from_secs(2);

/// Runs worker `name` of `cfg` inside the caller's tokio runtime until `shutdown` completes
/// (or `celery control shutdown` asks), then shuts down warmly: no new jobs, running ones
/// finish within the stop grace, their acks go out, the connection closes. Returns then, or
/// at once with the error if its first broker session cannot start. No pid file, readiness
/// pipe or signal handler: those are the process's (`run`).
pub async fn serve(
    cfg: &Config,
    name: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let worker = find_worker(cfg, name)?;
    let shutdown = Shutdown::new(async move {
        shutdown.await;
        "shutdown asked"
    });
    let stats = Arc::new(Counters::default());
    let brokers = Brokers::of(cfg);
    serve_worker(
        cfg,
        worker,
        shutdown,
        stats,
        brokers,
        local_utcoffset(),
        || {},
    )
    .await
}

/// Worker `name` of `cfg`, or the error that names the known ones.
pub(super) fn find_worker<'a>(cfg: &'a Config, name: &str) -> Result<WorkerRef<'a>, CmError> {
    cfg.worker(name).ok_or_else(|| CmError::UnknownWorker {
        name: name.to_string(),
        known: cfg.workers().map(|w| w.name).collect::<Vec<_>>().join(", "),
    })
}

/// This host's zone as Celery's events give it; UTC (0) when it cannot be read (the time
/// crate reads it only while the process has one thread).
pub(super) fn local_utcoffset() -> i64 {
    time::UtcOffset::current_local_offset().map_or(0, |offset| {
        crate::celery::event_format::python_utcoffset(i64::from(offset.whole_seconds()))
    })
}

/// Aborts the worker-wide tasks however `serve_worker` leaves.
struct Background(Vec<AbortHandle>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.iter().for_each(AbortHandle::abort);
    }
}

/// [`serve`] with what the process entry adds: its counters (for the stats file), its zone,
/// and `on_ready`, called once the first session consumes.
pub(super) async fn serve_worker(
    cfg: &Config,
    worker: WorkerRef<'_>,
    mut shutdown: Shutdown,
    stats: Arc<Counters>,
    brokers: Brokers,
    utcoffset: i64,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let node = cfg.node_name(worker.name);
    let queue = worker.queue;
    let store = Store::open_with(&cfg.store_url, cfg.store_busy_timeout, true).await?;
    // While half the prefetch waits for its commit, the broker still has the other half to send.
    let writer = store.writer(usize::from(queue.prefetch) / 2)?;
    let stops = Stops::default();
    let leases = LeasedJobs::default();
    let renewer = tokio::spawn(lease::renew(
        store.clone(),
        node.as_str().into(),
        leases.clone(),
        cfg.lease,
        stops.clone(),
    ));
    let mut background = Background(vec![renewer.abort_handle()]);
    // Read before the first delivery, so a job revoked while no worker ran never starts.
    let revoked = revokes::load(&store).await?;
    let poller = revokes::spawn(revoked.clone(), store.clone(), stops.clone());
    background.0.push(poller.abort_handle());
    let revoker = Revoker {
        store: store.clone(),
        revoked: revoked.clone(),
        stops: stops.clone(),
        by: format!("{node} (remote control)"),
    };
    let remote = Remote::new(
        cfg,
        worker,
        &stats,
        shutdown.remote(),
        utcoffset,
        revoker,
        &brokers,
    );
    // Read before the first session, so a worker started while its queue is paused takes nothing.
    remote.flow.refresh(&remote.running).await?;
    let poll = tokio::spawn(flow::poll(
        remote.flow.clone(),
        remote.running.clone(),
        stops.clone(),
    ));
    background.0.push(poll.abort_handle());
    let state = Arc::new(WorkerState {
        cfg: cfg.clone(),
        node: node.as_str().into(),
        queue: queue.clone(),
        store,
        writer,
        stats: stats.clone(),
        stops,
        leases,
        revoked,
        remote,
        result_dir: std::env::temp_dir(),
        brokers,
        released: Arc::new(tokio::sync::Notify::new()),
    });
    let mut sessions = match Sessions::start(state.clone()).await {
        Ok(s) => s,
        Err(e) => {
            // Its events task ends with `offline`; nothing went out, nothing waits.
            state.remote.events.offline(Duration::ZERO).await;
            return Err(e);
        }
    };
    let wanted = state.remote.flow.now();
    info!(
        "{node} {} queue {} (concurrency {}, prefetch {}), pid {}",
        if wanted.paused {
            "paused (cm queue resume to consume), on"
        } else {
            "consuming from"
        },
        queue.name,
        wanted.concurrency,
        state.remote.flow.prefetch_for(wanted.concurrency),
        std::process::id()
    );
    // Logged before `ready`, so the log says so by the time `cm queue start` returns.
    on_ready();

    let stopped_by = sessions.run(&mut shutdown).await;
    info!(
        "{stopped_by}: warm shutdown, taking no new jobs, finishing {} running",
        sessions.running.len()
    );
    let handed_back = sessions.drain().await;
    finish_running(&mut sessions, &state, cfg.stop_grace).await;
    drop(background);
    // After the last job's events, before the connection closes.
    state.remote.events.offline(OFFLINE_WITHIN).await;
    sessions.disconnect().await;
    let s = stats.snapshot();
    info!(
        "{node} stopped: {} job(s) done, {} failed, {handed_back} prefetched job(s) handed back",
        s.jobs_done, s.jobs_failed
    );
    Ok(())
}

/// Lets the running jobs finish within the stop grace less a margin; then they are stopped (a
/// command's group gets TERM, then KILL) and go back to the queue, before `cm` would SIGKILL
/// this worker.
async fn finish_running(sessions: &mut Sessions, state: &WorkerState, grace: Duration) {
    let deadline = tokio::time::Instant::now() + jobs_grace(grace);
    let mut asked = false;
    loop {
        tokio::select! {
            joined = sessions.running.join_next() => if joined.is_none() { break },
            () = tokio::time::sleep_until(deadline), if !asked => {
                warn!("the stop grace is nearly over: stopping {} running job(s); they go back to the queue", sessions.running.len());
                state.stops.shutdown();
                // A job whose end waits for room on a full disk goes back to the queue too.
                state.writer.give_up_waiting();
                asked = true;
            }
        }
    }
}

/// How long running jobs may go on after SIGTERM: the stop grace less what stopping a command
/// and settling its delivery take (`cm` SIGKILLs the worker once the whole grace is over).
fn jobs_grace(grace: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_secs(3);
    if grace > MARGIN * 2 {
        grace - MARGIN
    } else {
        grace / 2
    }
}

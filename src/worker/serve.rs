//! A worker's life over its broker sessions: open the store, consume through the first session
//! (its failure is the start's failure), say `ready`, reconnect with backoff whenever the
//! connection is lost, and on SIGTERM shut down warmly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::lease::{self, Held};
use super::remote::Remote;
use super::revokes::{self, Revoker};
use super::session::{backoff, is_final_refusal, Ended, Kept, Session};
use super::signals;
use super::stats::{self, Counters};
use crate::config::{Config, WorkerRef};
use crate::control::detach::ReadyPipe;
use crate::jobs::cancel::Stops;
use crate::store::Store;

/// `worker-offline` goes out within this at shutdown, or not at all.
const OFFLINE_WITHIN: Duration = Duration::from_secs(2);

pub(super) async fn serve(
    cfg: &Config,
    worker: WorkerRef<'_>,
    ready: &mut Option<ReadyPipe>,
    stats: Arc<Counters>,
    utcoffset: i64,
) -> anyhow::Result<()> {
    let node = cfg.node_name(worker.name);
    let queue = worker.queue;
    let mut stop = signals::Stop::install()?;
    let _log_signals =
        signals::handle_log_signals(ready.is_some().then(|| cfg.log_file(worker.name)))?;
    // This worker's pid lock proves no other worker of its name lives: whatever a job's command
    // of that name still runs was left by one that died (kill -9) mid-job.
    let left = crate::control::leftovers::stop(&cfg.path, std::slice::from_ref(&node)).await;
    if !left.is_empty() {
        warn!(
            "stopped {} process(es) a job's command left when {node} last died: {left:?}",
            left.len()
        );
    }
    let store = Store::open_with(&cfg.store_url, cfg.store_busy_timeout, true).await?;
    // While half the prefetch waits for its commit, the broker still has the other half to send.
    let writer = store.writer(usize::from(queue.prefetch) / 2)?;
    let stops = Stops::default();
    let held = Held::default();
    let renewer = tokio::spawn(lease::renew(
        store.clone(),
        node.as_str().into(),
        held.clone(),
        cfg.lease,
        stops.clone(),
    ));
    // Read before the first delivery, so a job revoked while no worker ran never starts.
    let revoked = revokes::load(&store).await?;
    let revoke_poller = revokes::spawn(revoked.clone(), store.clone(), stops.clone());
    let revoker = Revoker {
        store: store.clone(),
        revoked: revoked.clone(),
        stops: stops.clone(),
        by: format!("{node} (remote control)"),
    };
    let remote = Remote::new(cfg, worker, &stats, stop.remote(), utcoffset, revoker);
    let kept = Kept {
        store,
        writer,
        stats: stats.clone(),
        stops: stops.clone(),
        held,
        revoked,
        remote: remote.clone(),
    };
    // The first connection must work: `cm queue start` reports its failure and gives up. Only a
    // broker-side hiccup gets a few quick retries (seen: INTERNAL_ERROR consuming from a quorum
    // queue that a sibling worker declared a moment ago); no broker or a refused login fail at once.
    let mut attempt = 0;
    let mut session = loop {
        match Session::open(cfg, worker, &kept).await {
            Ok(s) => break s,
            Err(e) if attempt < 3 && !is_final_refusal(&e) => {
                attempt += 1;
                warn!("starting to consume, attempt {attempt}: {e:#}; trying again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e),
        }
    };

    info!(
        "{node} consuming from queue {} (concurrency {}, prefetch {}), pid {}",
        queue.name,
        queue.concurrency,
        queue.prefetch,
        std::process::id()
    );
    // Logged before `ready`, so the log says so by the time `cm queue start` returns.
    if let Some(pipe) = ready.take() {
        pipe.say(ReadyPipe::READY);
    }
    let stats_writer = stats::spawn_writer(
        stats.clone(),
        cfg.stats_file(worker.name),
        cfg.broker_url.clone(),
    );

    let slots = Arc::new(Semaphore::new(usize::from(queue.concurrency)));
    let mut running = JoinSet::new();
    let (stopped_by, session_left) = 'serving: loop {
        match session.consume(&slots, &mut running, &mut stop).await {
            Ended::Signal(name) => break (name, Some(session)),
            Ended::Lost(why) => {
                // The next connect tries another node of the list first.
                crate::amqp::lost();
                warn!(
                    "lost the broker connection: {why}; unacked jobs go back to queue {} and run again; reconnecting",
                    queue.name
                );
                let mut attempt = 0;
                session = loop {
                    let wait = backoff(attempt);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        name = stop.next() => break 'serving (name, None),
                    }
                    attempt += 1;
                    match Session::open(cfg, worker, &kept).await {
                        Ok(s) => {
                            info!("reconnected to the broker after {attempt} attempt(s); consuming from queue {} again", queue.name);
                            break s;
                        }
                        Err(e) => warn!(
                            "reconnect attempt {attempt} failed: {e:#}; next in {:?}",
                            backoff(attempt)
                        ),
                    }
                };
            }
        }
    };

    info!(
        "{stopped_by}: warm shutdown, taking no new jobs, finishing {} running",
        running.len()
    );
    // Cancel and hand back the prefetched first, so nothing new arrives while the running
    // jobs finish; close only after their acks went out (an ack after close is lost).
    let mut session = session_left;
    let handed_back = match session.as_mut() {
        Some(s) => s.drain().await,
        None => 0,
    };
    // Running jobs get the stop grace less a margin: then they are stopped (a command's group
    // gets TERM, then KILL) and go back to the queue, before `cm` would SIGKILL this worker.
    let deadline = tokio::time::Instant::now() + jobs_grace(cfg.stop_grace);
    let mut asked = false;
    loop {
        tokio::select! {
            joined = running.join_next() => if joined.is_none() { break },
            () = tokio::time::sleep_until(deadline), if !asked => {
                warn!("the stop grace is nearly over: stopping {} running job(s); they go back to the queue", running.len());
                stops.shutdown();
                // A job whose end waits for room on a full disk goes back to the queue too.
                kept.writer.give_up_waiting();
                asked = true;
            }
        }
    }
    stats_writer.abort();
    renewer.abort();
    revoke_poller.abort();
    // After the last job's events, before the connection closes.
    remote.events.offline(OFFLINE_WITHIN).await;
    if let Some(s) = &session {
        s.disconnect().await;
    }
    let s = stats.snapshot();
    info!(
        "{node} stopped: {} job(s) done, {} failed, {handed_back} prefetched job(s) handed back",
        s.jobs_done, s.jobs_failed
    );
    Ok(())
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

//! One worker process: consume, run, ack, and shut down warmly on SIGTERM.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use rand::Rng;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::acks::Acks;
use crate::broker::{self, Publisher};
use crate::config::{Config, WorkerRef};
use crate::control::pidfile::{AcquireError, PidLock};
use crate::control::WorkerStats;
use crate::exit::{code_for, CmError, Code};
use crate::joblog;
use crate::jobs::{self, Job};
use crate::protocol::TaskMessage;
use crate::store::{self, Event, Store, Writer};

/// Prefetched deliveries are handed back within this on shutdown; the broker returns the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const STATS_EVERY: Duration = Duration::from_millis(500);

/// Runs worker `name` until SIGTERM. `detached`: started by `cm queue start`, whose readiness
/// pipe is our stdout; the log file is our stderr.
pub fn run(cfg: &Config, name: &str, detached: bool) -> Code {
    let mut ready = None;
    if detached {
        // Our own session: an operator's Ctrl-C or closed terminal must not reach the workers.
        let _ = nix::unistd::setsid();
        match take_ready_pipe() {
            Ok(pipe) => ready = Some(pipe),
            Err(e) => {
                eprintln!("worker {name}: cannot set up its log and readiness pipe: {e}");
                return Code::Software;
            }
        }
    }
    match run_locked(cfg, name, &mut ready) {
        Ok(()) => Code::Success,
        Err(e) => {
            let code = code_for(&e);
            let text = format!("{e:#}");
            error!("worker {name} stopped: {text}");
            tell(&mut ready, &format!("error {}: {text}", code as u8));
            code
        }
    }
}

/// Keeps the pipe to `cm queue start` aside and points stdout at the log, so job output lands there.
fn take_ready_pipe() -> std::io::Result<File> {
    let pipe = nix::unistd::dup(std::io::stdout())?;
    nix::unistd::dup2_stdout(std::io::stderr())?;
    Ok(File::from(pipe))
}

/// One line to `cm queue start`, then the pipe is closed: it waits for nothing more.
fn tell(ready: &mut Option<File>, line: &str) {
    if let Some(mut pipe) = ready.take() {
        // The starter may have given up already; that is its business, not an error here.
        let _ = writeln!(pipe, "{line}");
    }
}

fn run_locked(cfg: &Config, name: &str, ready: &mut Option<File>) -> anyhow::Result<()> {
    let worker = cfg.worker(name).ok_or_else(|| CmError::UnknownWorker {
        name: name.to_string(),
        known: cfg.workers().map(|w| w.name).collect::<Vec<_>>().join(", "),
    })?;
    let lock = PidLock::acquire(&cfg.pid_file(name)).map_err(|e| match e {
        AcquireError::Io { ref cause, .. }
            if cause.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            CmError::Permission {
                message: format!("{e} (run with sudo, or set [paths] pid_dir)"),
            }
        }
        other => CmError::Other(other.to_string()),
    })?;
    let stderr = std::io::stderr();
    if let Some(user) = crate::privileges::drop_if_root(
        cfg,
        &[lock.file(), &stderr],
        &owned_paths(cfg)
            .iter()
            .map(|p| p.as_path())
            .collect::<Vec<_>>(),
    )? {
        info!("dropped privileges to {user}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Out of work: the job lines written since go to the log now (see joblog).
        .on_thread_park(joblog::flush)
        .build()
        .context("starting the async runtime")?;
    let stats = Arc::new(Counters::default());
    let result = runtime.block_on(serve(cfg, worker, ready, stats.clone()));
    joblog::flush();
    if let Err(e) = stats.snapshot().write(&cfg.stats_file(name)) {
        warn!("writing stats: {e}");
    }
    lock.release();
    result
}

/// What a worker writes besides its open files: handed to `[worker] user` when dropping root.
fn owned_paths(cfg: &Config) -> Vec<std::path::PathBuf> {
    let mut paths = vec![cfg.pid_dir.clone(), cfg.log_dir.clone()];
    if let crate::config::StoreLocation::SqliteFile(db) = &cfg.store_url {
        if let Some(dir) = db.parent() {
            // Created while still root, so the unprivileged worker can create the database in it.
            if let Err(e) = std::fs::create_dir_all(dir) {
                warn!("creating the store's folder {}: {e}", dir.display());
            }
            paths.push(dir.to_path_buf());
        }
        for suffix in ["", "-wal", "-shm", ".migrate-lock"] {
            paths.push(std::path::PathBuf::from(format!(
                "{}{suffix}",
                db.display()
            )));
        }
    }
    paths
}

#[derive(Debug, Default)]
struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            jobs_done: self.done.load(Ordering::Relaxed),
            jobs_failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What every job handler of this worker shares.
struct Ctx {
    cfg: Config,
    /// `name@host`, shared by every event this worker sends.
    node: store::Shared,
    queue: String,
    retries: u32,
    retry_backoff: Duration,
    publisher: Publisher,
    /// Settles this session's deliveries; handlers never ack on the channel themselves.
    acks: Acks,
    store: Store,
    writer: Writer,
    dead_declared: OnceCell<()>,
    stats: Arc<Counters>,
}

/// One connection's worth of consuming; replaced whole when the broker connection is lost.
struct Session {
    conn: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    ctx: Arc<Ctx>,
}

/// Why a session's consume loop ended.
enum Ended {
    Signal(&'static str),
    Lost(String),
}

/// How long to wait before reconnect attempt `n` (0-based): 0.5 s doubling, at most 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(30))
}

impl Session {
    async fn open(
        cfg: &Config,
        worker: WorkerRef<'_>,
        store: &Store,
        writer: &Writer,
        stats: &Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let node = cfg.node_name(worker.name);
        let queue = worker.queue;
        let conn = broker::connect(&cfg.broker_url, &format!("cm worker {node}")).await?;
        let channel = conn.create_channel().await.context("opening a channel")?;
        broker::declare_work_queue(&channel, &cfg.broker_url, queue).await?;
        channel
            .basic_qos(queue.prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch (basic.qos)")?;
        let consumer = channel
            .basic_consume(
                queue.name.as_str().into(),
                node.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming from queue {}", queue.name))?;
        let publisher = Publisher::open(&conn, &cfg.broker_url, &node).await?;
        let answer = {
            let (node, name, host, queue) = (
                node.clone(),
                worker.name.to_string(),
                cfg.node_host.clone(),
                queue.name.clone(),
            );
            let stats = stats.clone();
            move || {
                let me = nix::unistd::Pid::this();
                let s = stats.snapshot();
                crate::inspect::RemoteWorker {
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
            }
        };
        crate::inspect::answer_pings(&conn, &cfg.broker_url, queue.name.clone(), answer).await?;
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            node: node.as_str().into(),
            queue: queue.name.clone(),
            retries: queue.retries,
            retry_backoff: queue.retry_backoff,
            publisher,
            acks: Acks::spawn(channel.clone()),
            store: store.clone(),
            writer: writer.clone(),
            dead_declared: OnceCell::new(),
            stats: stats.clone(),
        });
        Ok(Self {
            conn,
            channel,
            consumer,
            ctx,
        })
    }

    /// Takes jobs while slots are free, until a signal or the connection's end.
    async fn consume(
        &mut self,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        signals: &mut Signals,
    ) -> Ended {
        loop {
            // A delivery is taken from the stream only when a slot is free, so on shutdown
            // everything still in the stream was never started and can go straight back.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ended::Signal("job slots closed"),
                },
                name = signals.next() => return Ended::Signal(name),
            };
            tokio::select! {
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        self.ctx.acks.taken(delivery.delivery_tag);
                        let ctx = self.ctx.clone();
                        // Boxed: the job's future is large, and spawning moved it about a
                        // dozen times (callgrind: 3% of a worker's instructions were those
                        // copies); a box moves as a pointer.
                        running.spawn(Box::pin(async move { handle(&ctx, delivery, permit).await }));
                    }
                    // lapin reports a dead peer (missed heartbeats) or a forced close as an
                    // error, then ends the stream: both mean reconnect, never a silent stall.
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("the broker cancelled the consumer (queue deleted?)".into()),
                },
                name = signals.next() => return Ended::Signal(name),
            }
            while running.try_join_next().is_some() {}
        }
    }

    /// Warm shutdown: cancel, hand back what was prefetched but not started, close.
    async fn drain(&mut self) -> usize {
        let node = self.ctx.node.clone();
        if let Err(e) = self
            .channel
            .basic_cancel((&*node).into(), BasicCancelOptions::default())
            .await
        {
            warn!("cancelling the consumer: {e}");
        }
        let mut requeued = 0;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(Ok(delivery)) = self.consumer.next().await {
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                if delivery.nack(requeue).await.is_ok() {
                    requeued += 1;
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("prefetched jobs not handed back within {DRAIN_TIMEOUT:?}; the broker requeues them on close");
        }
        requeued
    }

    async fn disconnect(&self) {
        // Acks still queued would be lost with the channel: the broker would run those jobs again.
        // Bounded: a broker that stopped reading must not keep the worker from exiting.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.ctx.acks.flush())
            .await
            .is_err()
        {
            warn!("acks not sent within {DRAIN_TIMEOUT:?}; the broker delivers those jobs again");
        }
        let _ = self.channel.close(200, "worker stopping".into()).await;
        let _ = self.conn.close(200, "worker stopping".into()).await;
    }
}

/// Points stdout and stderr at a fresh file at `path` (the old one was rotated away).
fn reopen_log(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    match opened {
        Ok(file) => {
            let moved =
                nix::unistd::dup2_stdout(&file).and_then(|()| nix::unistd::dup2_stderr(&file));
            match moved {
                Ok(()) => info!("SIGHUP: reopened log {}", path.display()),
                Err(e) => warn!("SIGHUP: cannot switch to {}: {e}", path.display()),
            }
        }
        Err(e) => warn!(
            "SIGHUP: cannot reopen log {}: {e}; still writing to the old file",
            path.display()
        ),
    }
}

/// Errors no retry can fix: no broker at the URL, a refused login or vhost.
fn is_final_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<broker::BrokerError>(),
            Some(
                broker::BrokerError::Unreachable { .. }
                    | broker::BrokerError::AccessRefused { .. }
                    | broker::BrokerError::VhostRefused { .. }
            )
        )
    })
}

/// SIGTERM and SIGINT, installed before `ready` so a stop right after start is a warm shutdown.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn serve(
    cfg: &Config,
    worker: WorkerRef<'_>,
    ready: &mut Option<File>,
    stats: Arc<Counters>,
) -> anyhow::Result<()> {
    let node = cfg.node_name(worker.name);
    let queue = worker.queue;
    let mut signals = Signals::install()?;
    // Detached, our stdout and stderr are the log file: logrotate's postrotate sends SIGHUP.
    let log = ready.is_some().then(|| cfg.log_file(worker.name));
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // A log at the file size limit must fail the write (and lose the line), not kill the worker:
    // having a handler replaces SIGXFSZ's default action, which is to terminate.
    let _file_too_big = signal(SignalKind::from_raw(nix::libc::SIGXFSZ))
        .context("installing the SIGXFSZ handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &log {
                Some(path) => reopen_log(path),
                None => info!("SIGHUP: logging to the terminal or journal; nothing to reopen"),
            }
        }
    });
    let store = Store::open_with(&cfg.store_url, cfg.store_busy_timeout, true).await?;
    // While half the prefetch waits for its commit, the broker still has the other half to send.
    let writer = store.writer(usize::from(queue.prefetch) / 2)?;
    // The first connection must work: `cm queue start` reports its failure and gives up. Only a
    // broker-side hiccup gets a few quick retries (seen: INTERNAL_ERROR consuming from a quorum
    // queue that a sibling worker declared a moment ago); no broker or a refused login fail at once.
    let mut attempt = 0;
    let mut session = loop {
        match Session::open(cfg, worker, &store, &writer, &stats).await {
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
    tell(ready, "ready");
    let stats_path = cfg.stats_file(worker.name);
    let stats_for_writer = stats.clone();
    let stats_writer = tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = stats_for_writer.snapshot();
            if last != Some((now.jobs_done, now.jobs_failed)) {
                if let Err(e) = now.write(&stats_path) {
                    warn!("writing stats: {e}");
                }
                last = Some((now.jobs_done, now.jobs_failed));
            }
            tokio::time::sleep(STATS_EVERY).await;
        }
    });

    let slots = Arc::new(Semaphore::new(usize::from(queue.concurrency)));
    let mut running = JoinSet::new();
    let (stopped_by, session_left) = 'serving: loop {
        match session.consume(&slots, &mut running, &mut signals).await {
            Ended::Signal(name) => break (name, Some(session)),
            Ended::Lost(why) => {
                warn!(
                    "lost the broker connection: {why}; unacked jobs go back to queue {} and run again; reconnecting",
                    queue.name
                );
                let mut attempt = 0;
                session = loop {
                    let wait = backoff(attempt);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        name = signals.next() => break 'serving (name, None),
                    }
                    attempt += 1;
                    match Session::open(cfg, worker, &store, &writer, &stats).await {
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
    while running.join_next().await.is_some() {}
    stats_writer.abort();
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

/// One line in the worker's log for one job event (what a job prints lands here too).
fn say(node: &str, id: &str, task: &str, event: &str) {
    joblog::line(&[node, " job ", id, " ", task, ": ", event]);
}

async fn handle(ctx: &Ctx, delivery: Delivery, slot: tokio::sync::OwnedSemaphorePermit) {
    let msg = match TaskMessage::decode(&delivery.properties, &delivery.data) {
        Ok(m) => m,
        Err(e) => return dead_letter(ctx, delivery, &e.to_string()).await,
    };
    let job = match Job::from_message(&msg) {
        Ok(j) => j,
        Err(e) => return dead_letter(ctx, delivery, &e.to_string()).await,
    };
    let (node, id, task) = (&*ctx.node, msg.id.as_str(), msg.task.as_str());
    // One copy of the id for all of this job's events.
    let shared_id = store::Shared::from(id);
    // Only a redelivery can be a job that already ran: look it up then, and not on the hot path.
    if delivery.redelivered {
        match ctx.store.state_of(id).await {
            Ok(Some(state)) if store::is_final(&state) => {
                say(
                    node,
                    id,
                    task,
                    &format!("already {state}; acked without running again"),
                );
                let seen = Event::Redelivered {
                    id: shared_id,
                    state,
                    worker: ctx.node.clone(),
                    at: store::now_ms(),
                };
                if let Err(e) = ctx.writer.commit(seen).await {
                    warn!("recording the redelivery of job {id}: {e}");
                }
                return ctx.acks.ack(delivery.delivery_tag);
            }
            Ok(_) => {}
            Err(e) => return give_back(ctx, &delivery, id, &e.to_string()).await,
        }
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
    state(ctx, &shared_id, task, store::STARTED);
    let outcome = run_steps(ctx, &job, &shared_id, task).await;
    // The next job may run while this one's final state is being committed.
    drop(slot);

    let at = store::now_ms();
    let retry = outcome.is_err() && msg.retries < ctx.retries;
    let event = match &outcome {
        Err(why) if retry => Event::Retry {
            id: shared_id.clone(),
            worker: ctx.node.clone(),
            at,
            error: why.clone(),
            retries: i64::from(msg.retries + 1),
        },
        Err(why) => Event::Finished {
            id: shared_id.clone(),
            state: store::FAILURE,
            worker: ctx.node.clone(),
            at,
            result: None,
            error: Some(why.clone()),
        },
        Ok(result) => Event::Finished {
            id: shared_id.clone(),
            state: store::SUCCESS,
            worker: ctx.node.clone(),
            at,
            result: Some(result.clone()),
            error: None,
        },
    };
    // The line goes before the commit: the writer flushes the log before each transaction, so
    // whoever sees the final state in the store (`cm launch --wait`) finds its line in the log.
    // Should the commit fail, the next line says the job goes back to the queue.
    let wait = ctx.retry_backoff * 2u32.saturating_pow(msg.retries);
    match &outcome {
        Ok(_) => say(node, id, task, "SUCCESS"),
        Err(why) if retry => say(
            node,
            id,
            task,
            &format!(
                "RETRY {} of {} in {wait:?}: {why}",
                msg.retries + 1,
                ctx.retries
            ),
        ),
        Err(why) => say(node, id, task, &format!("FAILURE {why}")),
    }
    // At least once: the ack goes out only after the final state is durable.
    if let Err(e) = ctx.writer.commit(event).await {
        return give_back(ctx, &delivery, id, &e.to_string()).await;
    }
    match &outcome {
        Ok(_) => {
            ctx.stats.done.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) if retry => {
            tokio::time::sleep(wait).await;
            let mut again = msg.clone();
            again.retries += 1;
            let (body, props) = again.encode(node);
            if let Err(e) = ctx
                .publisher
                .publish_confirmed(&ctx.queue, &body, props)
                .await
            {
                return give_back(ctx, &delivery, id, &format!("re-publishing for retry: {e}"))
                    .await;
            }
        }
        Err(_) => {
            ctx.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    if !retry {
        if let Some(reply_to) = &msg.reply_to {
            reply(ctx, &msg, reply_to, &outcome).await;
        }
    }
    ctx.acks.ack(delivery.delivery_tag);
}

/// Returns a job to its queue unacked-for-good: it runs again, here or on another worker.
async fn give_back(ctx: &Ctx, delivery: &Delivery, id: &str, why: &str) {
    error!("job {id}: {why}; not acked, returning it to the queue");
    // Not too hot a loop while the store or broker is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.acks.nack(delivery.delivery_tag, true);
}

/// Logs a state and queues it for the store (not awaited: the final state's commit covers it).
fn state(ctx: &Ctx, id: &store::Shared, task: &str, state: &'static str) {
    say(&ctx.node, id, task, state);
    ctx.writer.send(Event::State {
        id: id.clone(),
        state,
        worker: ctx.node.clone(),
        at: store::now_ms(),
    });
}

/// The job's steps; its result as JSON text, or why it failed.
async fn run_steps(ctx: &Ctx, job: &Job, id: &store::Shared, task: &str) -> Result<String, String> {
    if let Some(why) = job.refusal(&ctx.cfg) {
        return Err(why);
    }
    let sim = ctx.cfg.simulation;
    for step in job.steps() {
        state(ctx, id, task, step);
        let seconds = if sim.step_max > sim.step_min {
            rand::rng().random_range(sim.step_min..=sim.step_max)
        } else {
            sim.step_min
        };
        if seconds > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        }
        if let Some(why) = job.fails_at(&ctx.cfg, step) {
            return Err(why);
        }
        if sim.failure_rate > 0.0 && rand::rng().random_bool(sim.failure_rate) {
            return Err(format!("simulated failure during {step}"));
        }
    }
    Ok(job.result_json())
}

/// The rpc:// result backend: a Celery client's `AsyncResult.get()` reads this from `reply_to`.
async fn reply(ctx: &Ctx, msg: &TaskMessage, reply_to: &str, outcome: &Result<String, String>) {
    let (status, result) = match outcome {
        // Our own JSON text: it always parses back.
        Ok(text) => (
            "SUCCESS",
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        ),
        Err(why) => (
            "FAILURE",
            json!({"exc_type": "JobFailed", "exc_message": [why], "exc_module": "builtins"}),
        ),
    };
    let body = json!({
        "task_id": msg.id, "status": status, "result": result,
        "traceback": null, "children": [],
        "date_done": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    let correlation = msg.correlation_id.clone().unwrap_or_else(|| msg.id.clone());
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_correlation_id(correlation.as_str().into());
    let sent = ctx
        .publisher
        .publish_confirmed(reply_to, body.to_string().as_bytes(), props)
        .await;
    if let Err(e) = sent {
        warn!("sending the result of job {} to {reply_to}: {e}", msg.id);
    }
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
            broker::declare_queue(ctx.publisher.channel(), &ctx.cfg.broker_url, &dead)
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

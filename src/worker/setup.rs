//! The process around a worker (`cm worker NAME`): a detached worker's readiness pipe, the pid
//! lock, dropping root once its files are open, the runtime, the signals, the stats file; and
//! on failure the exit code and the one `error` line for `cm queue start`. Inside, the worker
//! itself is `serve`'s, as a worker run in-process is.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info, warn};

use super::serve::{find_worker, local_utcoffset, serve_worker};
use super::shutdown::Shutdown;
use super::signals;
use super::stats::{self, Counters};
use crate::config::{Config, WorkerRef};
use crate::control::detach::ReadyPipe;
use crate::control::{pidfile, Role};
use crate::exit::{code_for, Code};
use crate::joblog;

/// Runs worker `name` until SIGTERM. `detached`: started by `cm queue start`, whose readiness
/// pipe is our stdout; the log file is our stderr.
pub fn run(cfg: &Config, name: &str, detached: bool) -> Code {
    let mut ready = None;
    if detached {
        match ReadyPipe::take() {
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
            error!("worker {name} stopped: {e:#}");
            if let Some(pipe) = ready {
                pipe.fail(&e);
            }
            code_for(&e)
        }
    }
}

fn run_locked(cfg: &Config, name: &str, ready: &mut Option<ReadyPipe>) -> anyhow::Result<()> {
    let worker = find_worker(cfg, name)?;
    let lock = pidfile::lock(cfg, &Role::worker(name))?;
    let stderr = std::io::stderr();
    if let Some(user) = crate::control::privileges::drop_if_root(
        cfg,
        &[lock.file(), &stderr],
        &owned_paths(cfg)
            .iter()
            .map(|p| p.as_path())
            .collect::<Vec<_>>(),
    )? {
        info!("dropped privileges to {user}");
    }
    // Read while the process has one thread: the time crate refuses to read the zone otherwise.
    let utcoffset = local_utcoffset();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Out of work: the job lines written since go to the log now (see joblog).
        .on_thread_park(joblog::flush)
        .build()
        .context("starting the async runtime")?;
    let stats = Arc::new(Counters::default());
    let result = runtime.block_on(serve_process(cfg, worker, ready, stats.clone(), utcoffset));
    joblog::flush();
    stats.write(&cfg.stats_file(name));
    lock.release();
    result
}

/// The worker, with what only a process has: SIGTERM and SIGINT start its warm shutdown,
/// SIGHUP reopens its log, it adopts what its jobs' commands leave, what a job's command left
/// while no worker of its name ran is stopped, and once it consumes, `ready` goes down the pipe
/// and the stats file is kept.
async fn serve_process(
    cfg: &Config,
    worker: WorkerRef<'_>,
    ready: &mut Option<ReadyPipe>,
    stats: Arc<Counters>,
    utcoffset: i64,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::new(signals::stop_signals()?);
    let _log_signals =
        signals::handle_log_signals(ready.is_some().then(|| cfg.log_file(worker.name)))?;
    // What a job's command leaves (daemonised or not) is adopted by this worker, which stops it
    // with its job and reaps it.
    let _reaper = crate::control::subreaper::become_subreaper()
        .context("becoming the subreaper of the jobs' commands")?;
    // This worker's pid lock proves no other worker of its name lives: whatever a job's command
    // of that name still runs was left by one that was killed mid-job, or kept (keep_children).
    let node = cfg.node_name(worker.name);
    let left = crate::control::leftovers::stop(&cfg.path, std::slice::from_ref(&node)).await;
    if !left.is_empty() {
        warn!(
            "stopped {} process(es) left behind by {}",
            left.len(),
            crate::control::leftovers::by_job(&left)
        );
    }
    let brokers = crate::amqp::Brokers::of(cfg);
    let mut stats_writer = None;
    let on_ready = || {
        if let Some(pipe) = ready.take() {
            pipe.say(ReadyPipe::READY);
        }
        stats_writer = Some(stats::spawn_writer(
            stats.clone(),
            cfg.stats_file(worker.name),
            brokers.clone(),
        ));
    };
    let served = serve_worker(
        cfg,
        worker,
        shutdown,
        stats.clone(),
        brokers.clone(),
        utcoffset,
        on_ready,
    )
    .await;
    if let Some(writer) = stats_writer {
        writer.abort();
    }
    served
}

/// What a worker writes besides its open files: handed to `[worker] user` when dropping root.
fn owned_paths(cfg: &Config) -> Vec<PathBuf> {
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
            paths.push(PathBuf::from(format!("{}{suffix}", db.display())));
        }
    }
    paths
}

//! The process around the consumer: a detached worker's session and readiness pipe, the pid
//! lock, dropping root once its files are open, the runtime; and on failure the exit code and
//! the one `error` line for `cm queue start`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info, warn};

use super::serve::serve;
use super::stats::Counters;
use crate::config::Config;
use crate::control::detach::ReadyPipe;
use crate::control::{pidfile, Role};
use crate::exit::{code_for, CmError, Code};
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
    let worker = cfg.worker(name).ok_or_else(|| CmError::UnknownWorker {
        name: name.to_string(),
        known: cfg.workers().map(|w| w.name).collect::<Vec<_>>().join(", "),
    })?;
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
    let result = runtime.block_on(serve(cfg, worker, ready, stats.clone(), utcoffset));
    joblog::flush();
    stats.write(&cfg.stats_file(name));
    lock.release();
    result
}

/// This host's zone as Celery's events give it; UTC (0) when it cannot be read.
fn local_utcoffset() -> i64 {
    time::UtcOffset::current_local_offset().map_or(0, |offset| {
        crate::celery::event_format::python_utcoffset(i64::from(offset.whole_seconds()))
    })
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

//! The supervisor of every process cm starts detached (the workers and the web server), and the
//! process groups of the commands jobs will run. One file per thing done to a process, each rule
//! written once:
//!
//! - `role`: which process: its pid file, log, and the argv it starts with and is known by.
//! - `spawn` / `detach`: the parent's and the child's halves of a detached start (readiness pipe).
//! - `pidfile`: `celery@<name>.pid`, `cm-web.pid`: flock-held for the process's life.
//! - `procs`: identity via /proc (this binary, that role, this config), liveness, measurements.
//! - `stop`: which pids are ours to signal (stale files removed, never signalled; orphans
//!   found), and stopping them.
//! - `kill`: the one stop-with-deadline: first signal, grace, SIGKILL, kill wait.
//! - `group`: a child in its own process group, stopped as a group (for jobs' commands).
//! - `subreaper` / `strays`: the worker adopts what a job's command leaves (daemonised or not),
//!   reaps it, and finds and stops a job's processes outside its group (by `CM_JOB_ID`).
//! - `leftovers`: what jobs left when their worker was gone (kill -9, or kept), by environment.
//! - `privileges`: dropping root to the configured user once a process has opened its files.
//! - `workers` / `web`: what `cm queue` and `cm server` do with those pieces.

pub mod detach;
pub mod group;
pub mod kill;
pub mod leftovers;
pub mod pidfile;
pub mod privileges;
pub mod procs;
pub mod role;
pub mod spawn;
pub mod stop;
pub mod strays;
pub mod subreaper;
pub mod web;
mod workers;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{Flock, FlockArg};

pub use role::Role;
pub use stop::{StopAction, StopLine};
pub use workers::{clean, start, status, stop, CleanReport, StartLine, WorkerStats, WorkerStatus};

use crate::config::{Config, WorkerRef};
use crate::exit::CmError;

/// Serialises control commands on one pid dir, so two `cm queue start` at once cannot race.
#[derive(Debug)]
pub struct ControlLock {
    _lock: Flock<File>,
}

pub fn lock_control(cfg: &Config) -> Result<ControlLock, CmError> {
    spawn::ensure_writable_dir(&cfg.pid_dir, "pid dir", "pid_dir")?;
    let path = cfg.pid_dir.join(".cm-control.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| CmError::Permission {
            message: format!(
                "cannot open {}: {e} (run with sudo, or set [paths] pid_dir)",
                path.display()
            ),
        })?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, _)) => {
            eprintln!(
                "waiting for another cm command working on {}",
                cfg.pid_dir.display()
            );
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| CmError::Other(format!("locking {}: {e}", path.display())))?
        }
    };
    Ok(ControlLock { _lock: lock })
}

/// The named workers (all of them when `names` is empty); an unknown name is an error.
pub fn select<'a>(cfg: &'a Config, names: &[String]) -> Result<Vec<WorkerRef<'a>>, CmError> {
    if names.is_empty() {
        return Ok(cfg.workers().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.worker(n).ok_or_else(|| CmError::UnknownWorker {
                name: n.clone(),
                known: cfg.workers().map(|w| w.name).collect::<Vec<_>>().join(", "),
            })
        })
        .collect()
}

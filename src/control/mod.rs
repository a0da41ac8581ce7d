//! The supervisor side: start, stop, restart, clean and status over a set of workers.

pub mod detach;
pub mod pidfile;
pub mod procs;
pub mod signal;
pub mod spawn;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, WorkerRef};
use crate::exit::{CmError, Code};
use pidfile::Inspection;

/// After SIGKILL the kernel needs a moment; more than this means something is badly wrong.
const KILL_WAIT: Duration = Duration::from_secs(5);

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

#[derive(Debug, Clone, Serialize)]
pub struct StartLine {
    pub name: String,
    pub queue: String,
    pub pid: Option<i32>,
    pub ready: bool,
    pub error: Option<String>,
    #[serde(skip)]
    pub code: Code,
}

/// Stops the given workers if running, starts them, and waits until each is consuming.
pub async fn start(
    cfg: &Config,
    workers: &[WorkerRef<'_>],
) -> Result<(Vec<StopLine>, Vec<StartLine>), CmError> {
    spawn::ensure_writable_dir(&cfg.pid_dir, "pid dir", "pid_dir")?;
    spawn::ensure_writable_dir(&cfg.log_dir, "log dir", "log_dir")?;
    let stopped = stop(cfg, workers, cfg.stop_grace).await?;
    let deadline = Instant::now() + cfg.start_timeout;
    let mut waiting = tokio::task::JoinSet::new();
    for &worker in workers {
        let mut starting = spawn::spawn(cfg, worker)?;
        let log = cfg.log_file(worker.name);
        waiting.spawn(async move {
            let outcome = starting.wait_ready(deadline, &log).await;
            if outcome.is_err() {
                starting.reap().await;
            }
            (starting.name, starting.queue, starting.pid, outcome)
        });
    }
    let mut lines = Vec::new();
    while let Some(joined) = waiting.join_next().await {
        let (name, queue, pid, outcome) =
            joined.map_err(|e| CmError::Other(format!("waiting for a worker: {e}")))?;
        let (ready, error, code) = match outcome {
            Ok(()) => (true, None, Code::Success),
            Err(not_ready) => (false, Some(not_ready.reason), not_ready.code),
        };
        lines.push(StartLine {
            name,
            queue,
            pid: Some(pid.as_raw()),
            ready,
            error,
            code,
        });
    }
    // Report in config order, not in the order they happened to become ready.
    lines.sort_by_key(|l| workers.iter().position(|w| w.name == l.name));
    Ok((stopped, lines))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAction {
    /// Exited by itself after SIGTERM, running jobs finished.
    Stopped,
    /// Did not exit within the grace period and was killed.
    Killed,
    NotRunning,
    /// Its pid file was stale (lock free) and was removed; the pid in it was not signalled.
    StaleRemoved,
    /// A locked pid file names a process that is not this config's worker: left alone.
    Refused,
}

#[derive(Debug, Clone, Serialize)]
pub struct StopLine {
    pub name: String,
    pub pid: Option<i32>,
    pub action: StopAction,
    pub seconds: f64,
    pub detail: Option<String>,
}

struct Target {
    name: String,
    pid: Pid,
    live: Option<pidfile::LivePid>,
}

impl Target {
    fn gone(&self) -> bool {
        self.live.as_ref().is_none_or(|l| l.released()) && procs::is_dead(self.pid)
    }
}

/// SIGTERM, wait up to `grace` for running jobs to finish, then SIGKILL; pid files are gone after.
pub async fn stop(
    cfg: &Config,
    workers: &[WorkerRef<'_>],
    grace: Duration,
) -> Result<Vec<StopLine>, CmError> {
    let began = Instant::now();
    let mut lines = Vec::new();
    let mut targets = Vec::new();
    for w in workers {
        let path = cfg.pid_file(w.name);
        let line = |action, pid: Option<Pid>, detail: Option<String>| StopLine {
            name: w.name.to_string(),
            pid: pid.map(Pid::as_raw),
            action,
            seconds: 0.0,
            detail,
        };
        match pidfile::inspect(&path).map_err(|e| pid_error(&path, e))? {
            Inspection::Absent => lines.push(line(StopAction::NotRunning, None, None)),
            Inspection::Stale | Inspection::NotAFile => {
                pidfile::remove_if_stale(&path).map_err(|e| pid_error(&path, e))?;
                lines.push(line(StopAction::StaleRemoved, None, None));
            }
            Inspection::Live(live) => match live.pid {
                Some(pid) if procs::is_worker(pid, w.name, &cfg.path) => {
                    targets.push(Target {
                        name: w.name.to_string(),
                        pid,
                        live: Some(live),
                    });
                }
                pid => lines.push(line(
                    StopAction::Refused,
                    pid,
                    Some(format!(
                        "{} is locked but does not name this config's worker {}; not signalled",
                        path.display(),
                        w.name
                    )),
                )),
            },
        }
    }
    // Orphans: our workers whose pid file was deleted still consume; stop them the same way.
    for orphan in procs::workers_of(&cfg.path) {
        let wanted = workers.iter().any(|w| w.name == orphan.name);
        if wanted && !targets.iter().any(|t| t.pid == orphan.pid) {
            lines.retain(|l| !(l.name == orphan.name && l.action == StopAction::NotRunning));
            targets.push(Target {
                name: orphan.name,
                pid: orphan.pid,
                live: None,
            });
        }
    }
    for t in &targets {
        signal::send(t.pid, Signal::SIGTERM).map_err(|e| CmError::Permission {
            message: format!(
                "cannot signal worker {} (pid {}): {e} (run with sudo)",
                t.name, t.pid
            ),
        })?;
    }
    let grace_deadline = began + grace;
    let mut kill_deadline = None;
    let mut pending: Vec<(Target, StopAction)> = targets
        .into_iter()
        .map(|t| (t, StopAction::Stopped))
        .collect();
    while !pending.is_empty() {
        let now = Instant::now();
        let mut still = Vec::new();
        for (t, action) in pending {
            if t.gone() {
                lines.push(StopLine {
                    name: t.name.clone(),
                    pid: Some(t.pid.as_raw()),
                    action,
                    seconds: began.elapsed().as_secs_f64(),
                    detail: None,
                });
                let _ = pidfile::remove_if_stale(&cfg.pid_file(&t.name));
            } else {
                still.push((t, action));
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if now >= grace_deadline && kill_deadline.is_none() {
            for (t, action) in &mut pending {
                if procs::is_worker(t.pid, &t.name, &cfg.path) {
                    let _ = signal::send(t.pid, Signal::SIGKILL);
                }
                *action = StopAction::Killed;
            }
            kill_deadline = Some(now + KILL_WAIT);
        }
        if kill_deadline.is_some_and(|d| now >= d) {
            let names: Vec<_> = pending
                .iter()
                .map(|(t, _)| format!("{} (pid {})", t.name, t.pid))
                .collect();
            return Err(CmError::Partial {
                message: format!("still running after SIGKILL: {}", names.join(", ")),
                code: Code::Failure,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lines.sort_by_key(|l| workers.iter().position(|w| w.name == l.name));
    Ok(lines)
}

fn pid_error(path: &std::path::Path, e: std::io::Error) -> CmError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        CmError::Permission {
            message: format!(
                "cannot read pid file {}: {e} (run with sudo)",
                path.display()
            ),
        }
    } else {
        CmError::Other(format!("reading pid file {}: {e}", path.display()))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct CleanReport {
    /// (name, pid, was an orphan without a pid file)
    pub killed: Vec<(String, i32, bool)>,
    pub stale_removed: Vec<PathBuf>,
    pub logs_removed: Vec<PathBuf>,
}

/// Kills every worker of this config (orphans too), removes stale pid files, optionally logs.
pub async fn clean(cfg: &Config, remove_logs: bool) -> Result<CleanReport, CmError> {
    let mut report = CleanReport::default();
    let mut victims: Vec<(String, Pid, Option<pidfile::LivePid>)> = Vec::new();
    for w in cfg.workers() {
        let path = cfg.pid_file(w.name);
        if let Ok(Inspection::Live(live)) = pidfile::inspect(&path) {
            if let Some(pid) = live.pid.filter(|p| procs::is_worker(*p, w.name, &cfg.path)) {
                victims.push((w.name.to_string(), pid, Some(live)));
            }
        }
    }
    for orphan in procs::workers_of(&cfg.path) {
        if !victims.iter().any(|(_, pid, _)| *pid == orphan.pid) {
            victims.push((orphan.name, orphan.pid, None));
        }
    }
    for (name, pid, live) in &victims {
        signal::send(*pid, Signal::SIGKILL).map_err(|e| CmError::Permission {
            message: format!("cannot kill worker {name} (pid {pid}): {e} (run with sudo)"),
        })?;
        report
            .killed
            .push((name.clone(), pid.as_raw(), live.is_none()));
    }
    let deadline = Instant::now() + KILL_WAIT;
    signal::wait_until(deadline, || {
        victims.iter().all(|(_, pid, live)| {
            procs::is_dead(*pid) && live.as_ref().is_none_or(|l| l.released())
        })
    })
    .await;

    // Every celery@*.pid in the pid dir, configured or not: stale ones go, live ones stay.
    if let Ok(entries) = std::fs::read_dir(&cfg.pid_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with("celery@") && file_name.ends_with(".pid") {
                match pidfile::remove_if_stale(&path) {
                    Ok(true) => report.stale_removed.push(path),
                    Ok(false) => {}
                    Err(e) => return Err(pid_error(&path, e)),
                }
            } else if file_name.starts_with("celery@") && file_name.ends_with(".stats") {
                let pid_path = path.with_extension("pid");
                if matches!(pidfile::inspect(&pid_path), Ok(Inspection::Absent)) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    if remove_logs {
        for w in cfg.workers() {
            let log = cfg.log_file(w.name);
            if std::fs::remove_file(&log).is_ok() {
                report.logs_removed.push(log);
            }
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub name: String,
    pub queue: String,
    pub node: String,
    pub pid: Option<i32>,
    /// running | stale pid | stopped | orphan | unknown holder
    pub state: &'static str,
    pub uptime_seconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub jobs_done: Option<u64>,
    pub jobs_failed: Option<u64>,
}

/// Counters a worker keeps beside its pid file, written at most once a second.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize)]
pub struct WorkerStats {
    pub jobs_done: u64,
    pub jobs_failed: u64,
}

impl WorkerStats {
    pub fn read(path: &std::path::Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Write-then-rename, so a reader never sees half a file.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("stats.partial");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

pub fn status(cfg: &Config, workers: &[WorkerRef<'_>]) -> Vec<WorkerStatus> {
    let orphans = procs::workers_of(&cfg.path);
    workers
        .iter()
        .map(|w| {
            let (state, pid) = match pidfile::inspect(&cfg.pid_file(w.name)) {
                Ok(Inspection::Live(live)) => match live.pid {
                    Some(pid) if procs::is_worker(pid, w.name, &cfg.path) => ("running", Some(pid)),
                    pid => ("unknown holder", pid),
                },
                Ok(Inspection::Stale) | Ok(Inspection::NotAFile) => ("stale pid", None),
                _ => match orphans.iter().find(|o| o.name == w.name) {
                    Some(o) => ("orphan", Some(o.pid)),
                    None => ("stopped", None),
                },
            };
            let alive = matches!(state, "running" | "orphan");
            let stats =
                alive.then(|| WorkerStats::read(&cfg.stats_file(w.name)).unwrap_or_default());
            WorkerStatus {
                name: w.name.to_string(),
                queue: w.queue.name.clone(),
                node: cfg.node_name(w.name),
                pid: pid.map(Pid::as_raw),
                state,
                uptime_seconds: pid
                    .filter(|_| alive)
                    .and_then(procs::uptime)
                    .map(|d| d.as_secs()),
                memory_bytes: pid.filter(|_| alive).and_then(procs::rss_bytes),
                jobs_done: stats.map(|s| s.jobs_done),
                jobs_failed: stats.map(|s| s.jobs_failed),
            }
        })
        .collect()
}

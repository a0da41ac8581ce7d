//! The workers as `cm queue start|stop|restart|clean|status` see them: a set of worker roles
//! through the shared spawn, stop and /proc rules, plus what only workers have (the `ready`
//! line, the stats file, the sweep of `celery@*.pid`).

use std::path::PathBuf;

use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use super::detach::ReadyPipe;
use super::pidfile::{self, Inspection};
use super::procs;
use super::role::Role;
use super::spawn::{self, NotReady};
use super::stop::{self, pid_error, Claim, StopLine, Target};
use crate::config::{Config, WorkerRef};
use crate::exit::{CmError, Code};

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

fn roles(workers: &[WorkerRef<'_>]) -> Vec<Role> {
    workers.iter().map(|w| Role::worker(w.name)).collect()
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
        let mut starting = spawn::spawn(cfg, &Role::worker(worker.name), &[])?;
        let (name, queue) = (worker.name.to_string(), worker.queue.name.clone());
        let log = cfg.log_file(worker.name);
        waiting.spawn(async move {
            let outcome = starting
                .wait_ready(deadline, |line| line == ReadyPipe::READY)
                .await;
            if outcome.is_err() {
                starting.reap().await;
            }
            let line = |ready, error, code| StartLine {
                name,
                queue,
                pid: Some(starting.pid.as_raw()),
                ready,
                error,
                code,
            };
            match outcome {
                Ok(_) => line(true, None, Code::Success),
                Err(not_ready) => {
                    let (code, why) = not_consuming(not_ready, &log);
                    line(false, Some(why), code)
                }
            }
        });
    }
    let mut lines = Vec::new();
    while let Some(joined) = waiting.join_next().await {
        lines.push(joined.map_err(|e| CmError::Other(format!("waiting for a worker: {e}")))?);
    }
    // Report in config order, not in the order they happened to become ready.
    lines.sort_by_key(|l| workers.iter().position(|w| w.name == l.name));
    Ok((stopped, lines))
}

/// A worker's start failure as its report line says it.
fn not_consuming(not_ready: NotReady, log: &std::path::Path) -> (Code, String) {
    match not_ready {
        NotReady::Deadline => (
            Code::TempFail,
            format!("not consuming by the start deadline; see {}", log.display()),
        ),
        NotReady::Refused { code, why } => (code, why),
        NotReady::Ended { how } => (
            Code::Failure,
            format!(
                "{how} before it was consuming; last log line: {}",
                spawn::last_line(log).unwrap_or_else(|| "(empty)".into())
            ),
        ),
    }
}

/// SIGTERM, wait up to `grace` for running jobs to finish, then SIGKILL; pid files are gone after.
pub async fn stop(
    cfg: &Config,
    workers: &[WorkerRef<'_>],
    grace: std::time::Duration,
) -> Result<Vec<StopLine>, CmError> {
    stop::stop(cfg, &roles(workers), grace).await
}

#[derive(Debug, Default, Serialize)]
pub struct CleanReport {
    /// (name, pid, was an orphan without a pid file)
    pub killed: Vec<(String, i32, bool)>,
    pub stale_removed: Vec<PathBuf>,
    pub logs_removed: Vec<PathBuf>,
    /// Pids of what dead workers' job commands left running.
    pub leftovers: Vec<i32>,
}

/// Kills every worker of this config (orphans too), removes stale pid files, optionally logs.
pub async fn clean(cfg: &Config, remove_logs: bool) -> Result<CleanReport, CmError> {
    let mut report = CleanReport::default();
    let mut victims: Vec<Target<'_>> = Vec::new();
    for w in cfg.workers() {
        // A stale or foreign pid file is left to the sweep below, never signalled.
        if let Ok(Claim::Ours(target)) = stop::claim(cfg, &Role::worker(w.name)) {
            victims.push(target);
        }
    }
    for found in procs::running(&cfg.path) {
        let worker = matches!(found.role, Role::Worker(_));
        if worker && !victims.iter().any(|t| t.pid == found.pid) {
            victims.push(Target::orphan(found, &cfg.path));
        }
    }
    report.killed = victims
        .iter()
        .map(|t| (t.role.label().to_string(), t.pid.as_raw(), t.is_orphan()))
        .collect();
    stop::kill_now(victims).await?;
    // With every worker gone, anything their jobs' commands left behind is an orphan too.
    let nodes: Vec<String> = cfg.workers().map(|w| cfg.node_name(w.name)).collect();
    report.leftovers = super::leftovers::stop(&cfg.path, &nodes)
        .await
        .into_iter()
        .map(|l| l.pid.as_raw())
        .collect();

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
    /// running | paused | stale pid | stopped | orphan | unknown holder
    pub state: &'static str,
    pub uptime_seconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub jobs_done: Option<u64>,
    pub jobs_failed: Option<u64>,
    /// The broker node it is connected to (of `[broker] url`'s list), its password hidden.
    pub broker: Option<String>,
    /// Its job slots now, and what `cm queue scale` asked (they differ while running jobs that
    /// a shrink waits for end).
    pub concurrency: Option<u16>,
    pub desired_concurrency: Option<u16>,
}

/// Counters a worker keeps beside its pid file, written at most twice a second.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WorkerStats {
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// The broker node the worker is connected to, redacted (an older worker wrote none).
    #[serde(default)]
    pub broker: Option<String>,
    /// Not consuming: `cm queue pause` (or `cancel_consumer`) reached it.
    #[serde(default)]
    pub paused: bool,
    /// Job slots now, and asked for (`cm queue scale`); none from an older worker.
    #[serde(default)]
    pub concurrency: Option<u16>,
    #[serde(default)]
    pub desired_concurrency: Option<u16>,
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
    let running = procs::running(&cfg.path);
    workers
        .iter()
        .map(|w| {
            let (state, pid) = stop::state(cfg, &Role::worker(w.name), &running);
            let alive = matches!(state, "running" | "orphan");
            let stats =
                alive.then(|| WorkerStats::read(&cfg.stats_file(w.name)).unwrap_or_default());
            let alive_pid = pid.filter(|_| alive);
            let state = match &stats {
                Some(s) if s.paused && state == "running" => "paused",
                _ => state,
            };
            WorkerStatus {
                name: w.name.to_string(),
                queue: w.queue.name.clone(),
                node: cfg.node_name(w.name),
                pid: pid.map(Pid::as_raw),
                state,
                uptime_seconds: alive_pid.and_then(procs::uptime).map(|d| d.as_secs()),
                memory_bytes: alive_pid.and_then(procs::rss_bytes),
                jobs_done: stats.as_ref().map(|s| s.jobs_done),
                jobs_failed: stats.as_ref().map(|s| s.jobs_failed),
                concurrency: stats.as_ref().and_then(|s| s.concurrency),
                desired_concurrency: stats.as_ref().and_then(|s| s.desired_concurrency),
                broker: stats.and_then(|s| s.broker),
            }
        })
        .collect()
}

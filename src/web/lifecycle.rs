//! The detached web server as `cm server stop|clean|status` see it, with the workers' rules: a pid
//! file whose lock is free is stale and its pid never signalled; a locked one is signalled only if
//! /proc shows that pid running this binary as `web --detached` for this config. A server whose
//! pid file was deleted is found in /proc the same way (an orphan) and stopped too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use super::detach;
use crate::config::Config;
use crate::control::pidfile::{self, Inspection, LivePid};
use crate::control::{procs, signal, StopAction, StopLine};
use crate::exit::{CmError, Code};

/// The server finishes requests in flight within its request timeout (10 s); then it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// After SIGKILL the kernel needs a moment; more than this means something is badly wrong.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The name on its report lines, beside the workers'.
pub const NAME: &str = "web";

fn pid_error(path: &Path, e: std::io::Error) -> CmError {
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

struct Target {
    pid: Pid,
    /// None for an orphan (its pid file was deleted).
    live: Option<LivePid>,
}

impl Target {
    fn gone(&self) -> bool {
        self.live.as_ref().is_none_or(|l| l.released()) && procs::is_dead(self.pid)
    }
}

/// The servers of this config: the one its pid file names (if ours) and any orphans; plus a
/// report line for a stale or foreign pid file.
fn targets(cfg: &Config) -> Result<(Vec<Target>, Vec<StopLine>), CmError> {
    let path = detach::pid_file(cfg);
    let line = |action, pid: Option<Pid>, detail| StopLine {
        name: NAME.into(),
        pid: pid.map(Pid::as_raw),
        action,
        seconds: 0.0,
        detail,
    };
    let mut targets = Vec::new();
    let mut lines = Vec::new();
    match pidfile::inspect(&path).map_err(|e| pid_error(&path, e))? {
        Inspection::Absent => {}
        Inspection::Stale | Inspection::NotAFile => {
            pidfile::remove_if_stale(&path).map_err(|e| pid_error(&path, e))?;
            lines.push(line(StopAction::StaleRemoved, None, None));
        }
        Inspection::Live(live) => match live.pid {
            Some(pid) if procs::is_web_server(pid, &cfg.path) => targets.push(Target {
                pid,
                live: Some(live),
            }),
            pid => lines.push(line(
                StopAction::Refused,
                pid,
                Some(format!(
                    "{} is locked but does not name this config's web server; not signalled",
                    path.display()
                )),
            )),
        },
    }
    for pid in procs::web_servers_of(&cfg.path) {
        if !targets.iter().any(|t| t.pid == pid) {
            targets.push(Target { pid, live: None });
        }
    }
    Ok((targets, lines))
}

/// Removes the address file once no server holds the pid file.
fn forget_addr(cfg: &Config) {
    if matches!(
        pidfile::inspect(&detach::pid_file(cfg)),
        Ok(Inspection::Absent)
    ) {
        let _ = std::fs::remove_file(detach::addr_file(cfg));
    }
}

/// SIGTERM, wait up to `grace` for requests in flight, then SIGKILL; the pid file is gone after.
/// One `NotRunning` line when there was nothing to stop.
pub async fn stop(cfg: &Config, grace: Duration) -> Result<Vec<StopLine>, CmError> {
    let began = Instant::now();
    let (targets, mut lines) = targets(cfg)?;
    if targets.is_empty() && lines.is_empty() {
        lines.push(StopLine {
            name: NAME.into(),
            pid: None,
            action: StopAction::NotRunning,
            seconds: 0.0,
            detail: None,
        });
    }
    for t in &targets {
        signal::send(t.pid, Signal::SIGTERM).map_err(|e| CmError::Permission {
            message: format!(
                "cannot signal the web server (pid {}): {e} (run with sudo)",
                t.pid
            ),
        })?;
    }
    let mut pending: Vec<(Target, StopAction)> = targets
        .into_iter()
        .map(|t| (t, StopAction::Stopped))
        .collect();
    let mut kill_deadline = None;
    while !pending.is_empty() {
        let now = Instant::now();
        let (gone, still): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _)| t.gone());
        for (t, action) in gone {
            lines.push(StopLine {
                name: NAME.into(),
                pid: Some(t.pid.as_raw()),
                action,
                seconds: began.elapsed().as_secs_f64(),
                detail: t.live.is_none().then(|| "orphan (no pid file)".into()),
            });
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if now >= began + grace && kill_deadline.is_none() {
            for (t, action) in &mut pending {
                if procs::is_web_server(t.pid, &cfg.path) {
                    let _ = signal::send(t.pid, Signal::SIGKILL);
                }
                *action = StopAction::Killed;
            }
            kill_deadline = Some(now + KILL_WAIT);
        }
        if kill_deadline.is_some_and(|d| now >= d) {
            let pids: Vec<_> = pending.iter().map(|(t, _)| t.pid.to_string()).collect();
            return Err(CmError::Partial {
                message: format!(
                    "web server still running after SIGKILL (pid {})",
                    pids.join(", ")
                ),
                code: Code::Failure,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A killed server could not remove its own pid file; its lock is free now.
    let _ = pidfile::remove_if_stale(&detach::pid_file(cfg));
    forget_addr(cfg);
    Ok(lines)
}

#[derive(Debug, Default, Serialize)]
pub struct CleanReport {
    /// (pid, was an orphan without a pid file)
    pub killed: Vec<(i32, bool)>,
    pub stale_removed: Vec<PathBuf>,
    pub logs_removed: Vec<PathBuf>,
}

/// Kills this config's web server (orphans too), removes a stale pid file, optionally the log.
pub async fn clean(cfg: &Config, remove_logs: bool) -> Result<CleanReport, CmError> {
    let mut report = CleanReport::default();
    let path = detach::pid_file(cfg);
    // A stale or foreign pid file is left to the removal below, never signalled.
    let (victims, lines) = targets(cfg)?;
    if lines.iter().any(|l| l.action == StopAction::StaleRemoved) {
        report.stale_removed.push(path.clone());
    }
    for t in &victims {
        signal::send(t.pid, Signal::SIGKILL).map_err(|e| CmError::Permission {
            message: format!(
                "cannot kill the web server (pid {}): {e} (run with sudo)",
                t.pid
            ),
        })?;
        report.killed.push((t.pid.as_raw(), t.live.is_none()));
    }
    signal::wait_until(Instant::now() + KILL_WAIT, || {
        victims.iter().all(Target::gone)
    })
    .await;
    match pidfile::remove_if_stale(&path) {
        Ok(true) if !report.stale_removed.contains(&path) => report.stale_removed.push(path),
        Ok(_) => {}
        Err(e) => return Err(pid_error(&detach::pid_file(cfg), e)),
    }
    forget_addr(cfg);
    if remove_logs {
        let log = detach::log_file(cfg);
        if std::fs::remove_file(&log).is_ok() {
            report.logs_removed.push(log);
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Serialize)]
pub struct WebStatus {
    /// Where it listens (what it wrote when it bound), else where `[web] bind` says it would.
    pub url: String,
    pub pid: Option<i32>,
    /// running | stale pid | stopped | orphan | unknown holder
    pub state: &'static str,
    /// `[web] enabled`: whether `cm server start` starts it.
    pub enabled: bool,
    pub uptime_seconds: Option<u64>,
    pub memory_bytes: Option<u64>,
}

pub fn status(cfg: &Config) -> WebStatus {
    let (state, pid) = match pidfile::inspect(&detach::pid_file(cfg)) {
        Ok(Inspection::Live(live)) => match live.pid {
            Some(pid) if procs::is_web_server(pid, &cfg.path) => ("running", Some(pid)),
            pid => ("unknown holder", pid),
        },
        Ok(Inspection::Stale) | Ok(Inspection::NotAFile) => ("stale pid", None),
        _ => match procs::web_servers_of(&cfg.path).first() {
            Some(pid) => ("orphan", Some(*pid)),
            None => ("stopped", None),
        },
    };
    let alive = matches!(state, "running" | "orphan");
    let url = alive
        .then(|| detach::read_addr(cfg))
        .flatten()
        .unwrap_or_else(|| format!("http://{}", cfg.web_bind));
    WebStatus {
        url,
        pid: pid.map(Pid::as_raw),
        state,
        enabled: cfg.web_enabled,
        uptime_seconds: pid
            .filter(|_| alive)
            .and_then(procs::uptime)
            .map(|d| d.as_secs()),
        memory_bytes: pid.filter(|_| alive).and_then(procs::rss_bytes),
    }
}

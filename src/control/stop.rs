//! Which processes of a role are ours to signal, and stopping them: one rule for the workers and
//! the web server. A pid file whose lock is free is stale: it is removed and its pid never
//! signalled. A locked one is signalled only if /proc shows that pid running this binary in that
//! role for this config. A process of the role whose pid file is gone (an orphan) is found in
//! /proc and stopped the same way.

use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;

use super::kill::{self, StopError, Stoppable};
use super::pidfile::{self, Inspection, LivePid};
use super::procs::{self, Found};
use super::role::Role;
use crate::config::Config;
use crate::exit::{CmError, Code};

/// What a role's pid file says.
#[derive(Debug)]
pub enum Claim<'c> {
    Absent,
    /// Its lock is free (or it is no regular file): the pid inside is not to be trusted.
    Stale,
    /// Locked by a process /proc shows is ours.
    Ours(Target<'c>),
    /// Locked by something else, or by a pid not yet written: never signalled.
    Foreign(Option<Pid>),
}

/// Reads `role`'s pid file and checks its holder against /proc; changes nothing.
pub fn claim<'c>(cfg: &'c Config, role: &Role) -> io::Result<Claim<'c>> {
    Ok(match pidfile::inspect(&role.pid_file(cfg))? {
        Inspection::Absent => Claim::Absent,
        Inspection::Stale | Inspection::NotAFile => Claim::Stale,
        Inspection::Live(live) => match live.pid {
            Some(pid) if procs::is(pid, role, &cfg.path) => Claim::Ours(Target {
                role: role.clone(),
                pid,
                live: Some(live),
                config: &cfg.path,
            }),
            pid => Claim::Foreign(pid),
        },
    })
}

/// A process proven ours: the holder of its role's pid file, or an orphan.
#[derive(Debug)]
pub struct Target<'c> {
    pub role: Role,
    pub pid: Pid,
    /// Its pid file, held open to see the lock go; `None` for an orphan.
    live: Option<LivePid>,
    config: &'c Path,
}

impl<'c> Target<'c> {
    pub fn orphan(found: Found, config: &'c Path) -> Self {
        Self {
            role: found.role,
            pid: found.pid,
            live: None,
            config,
        }
    }

    pub fn is_orphan(&self) -> bool {
        self.live.is_none()
    }
}

impl Stoppable for Target<'_> {
    fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        // Proven again before every signal: once it is gone, its pid can be someone else's.
        if procs::is(self.pid, &self.role, self.config) {
            kill::send(self.pid, signal)
        } else {
            Ok(())
        }
    }

    fn gone(&mut self) -> bool {
        self.live.as_ref().is_none_or(|l| l.released()) && procs::is_dead(self.pid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopAction {
    /// Exited by itself after SIGTERM (a worker's running jobs finished).
    Stopped,
    /// Did not exit within the grace period and was killed.
    Killed,
    NotRunning,
    /// Its pid file was stale (lock free) and was removed; the pid in it was not signalled.
    StaleRemoved,
    /// A locked pid file names a process that is not this config's: left alone.
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

/// SIGTERM to every process of `roles` that is ours (orphans too), SIGKILL to those still there
/// after `grace`; their pid files are gone after. One line per role at least, in `roles` order.
pub async fn stop(cfg: &Config, roles: &[Role], grace: Duration) -> Result<Vec<StopLine>, CmError> {
    let line = |role: &Role, action, pid: Option<Pid>, detail| StopLine {
        name: role.label().to_string(),
        pid: pid.map(Pid::as_raw),
        action,
        seconds: 0.0,
        detail,
    };
    let mut lines = Vec::new();
    let mut targets = Vec::new();
    for role in roles {
        let path = role.pid_file(cfg);
        match claim(cfg, role).map_err(|e| pid_error(&path, e))? {
            Claim::Absent => {}
            Claim::Stale => {
                pidfile::remove_if_stale(&path).map_err(|e| pid_error(&path, e))?;
                lines.push(line(role, StopAction::StaleRemoved, None, None));
            }
            Claim::Ours(target) => targets.push(target),
            Claim::Foreign(pid) => lines.push(line(
                role,
                StopAction::Refused,
                pid,
                Some(format!(
                    "{} is locked but does not name this config's {}; not signalled",
                    path.display(),
                    role.of_config()
                )),
            )),
        }
    }
    for found in procs::running(&cfg.path) {
        if roles.contains(&found.role) && !targets.iter().any(|t| t.pid == found.pid) {
            targets.push(Target::orphan(found, &cfg.path));
        }
    }
    for role in roles {
        let named = |name: &str| name == role.label();
        if !lines.iter().any(|l| named(&l.name)) && !targets.iter().any(|t| t.role == *role) {
            lines.push(line(role, StopAction::NotRunning, None, None));
        }
    }
    let stopped = match kill::stop_all(targets, Signal::SIGTERM, grace).await {
        Ok(stopped) => stopped,
        Err(StopError::Signal { target, error }) => {
            return Err(CmError::Permission {
                message: format!(
                    "cannot signal {} (pid {}): {error} (run with sudo)",
                    target.role.noun(),
                    target.pid
                ),
            })
        }
        Err(StopError::StillRunning { left, .. }) => {
            let names: Vec<_> = left
                .iter()
                .map(|t| format!("{} (pid {})", t.role.label(), t.pid))
                .collect();
            return Err(CmError::Partial {
                message: format!("still running after SIGKILL: {}", names.join(", ")),
                code: Code::Failure,
            });
        }
    };
    for s in stopped {
        let t = &s.target;
        let action = if s.killed {
            StopAction::Killed
        } else {
            StopAction::Stopped
        };
        let orphan = t.is_orphan().then(|| "orphan (no pid file)".to_string());
        lines.push(StopLine {
            seconds: s.after.as_secs_f64(),
            ..line(&t.role, action, Some(t.pid), orphan)
        });
        // A killed process could not remove its own pid file; its lock is free now.
        let _ = pidfile::remove_if_stale(&t.role.pid_file(cfg));
    }
    lines.sort_by_key(|l| roles.iter().position(|r| r.label() == l.name));
    Ok(lines)
}

/// SIGKILL to each target at once (`clean`), then up to `kill::KILL_WAIT` for them to be gone.
pub async fn kill_now(targets: Vec<Target<'_>>) -> Result<(), CmError> {
    match kill::stop_all(targets, Signal::SIGKILL, Duration::ZERO).await {
        // Still there after KILL_WAIT: nothing more to send; its pid file stays, as it is locked.
        Ok(_) | Err(StopError::StillRunning { .. }) => Ok(()),
        Err(StopError::Signal { target, error }) => Err(CmError::Permission {
            message: format!(
                "cannot kill {} (pid {}): {error} (run with sudo)",
                target.role.noun(),
                target.pid
            ),
        }),
    }
}

/// `status`'s word for a role: running, unknown holder, stale pid, orphan or stopped; and its pid.
pub fn state(cfg: &Config, role: &Role, running: &[Found]) -> (&'static str, Option<Pid>) {
    match claim(cfg, role) {
        Ok(Claim::Ours(t)) => ("running", Some(t.pid)),
        Ok(Claim::Foreign(pid)) => ("unknown holder", pid),
        Ok(Claim::Stale) => ("stale pid", None),
        Ok(Claim::Absent) | Err(_) => match running.iter().find(|f| f.role == *role) {
            Some(f) => ("orphan", Some(f.pid)),
            None => ("stopped", None),
        },
    }
}

/// Reading a pid file failed; the error says what to do.
pub(super) fn pid_error(path: &Path, e: io::Error) -> CmError {
    if e.kind() == io::ErrorKind::PermissionDenied {
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

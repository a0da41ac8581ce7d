//! `cm web --detach`: what `cm queue start` does for a worker, for the web server. The child is
//! `cm --config PATH web --detached [--bind ADDR]` in its own session; its stdout is a pipe on
//! which it writes `listening on http://ADDR` once bound, or `error <code>: <why>`; its stderr is
//! `cm-web.log`; it holds `cm-web.pid` locked for its whole life.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use crate::config::Config;
use crate::control::pidfile::{self, AcquireError, Inspection, PidLock};
use crate::control::spawn::ensure_writable_dir;
use crate::exit::{code_for, CmError, Code};

pub fn pid_file(cfg: &Config) -> PathBuf {
    cfg.pid_dir.join("cm-web.pid")
}

pub fn log_file(cfg: &Config) -> PathBuf {
    cfg.log_dir.join("cm-web.log")
}

/// `http://ADDR` the detached server listens on, written once it is bound (the pid file holds
/// only the pid); removed when it exits.
pub fn addr_file(cfg: &Config) -> PathBuf {
    cfg.pid_dir.join("cm-web.addr")
}

/// Write-then-rename, so `cm server status` never reads half an address.
pub fn write_addr(cfg: &Config, url: &str) {
    let path = addr_file(cfg);
    let tmp = path.with_extension("addr.partial");
    if let Err(e) =
        std::fs::write(&tmp, format!("{url}\n")).and_then(|()| std::fs::rename(&tmp, &path))
    {
        tracing::warn!("writing {}: {e}", path.display());
    }
}

/// What the detached server wrote in [`addr_file`], if it is there.
pub fn read_addr(cfg: &Config) -> Option<String> {
    let text = std::fs::read_to_string(addr_file(cfg)).ok()?;
    let url = text.trim();
    (url.starts_with("http://") && url.len() < 300).then(|| url.to_string())
}

/// A detached server that said it listens.
#[derive(Debug, Clone)]
pub struct Started {
    /// `http://ADDR`
    pub url: String,
    pub pid: u32,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

/// Where the server says it listens: stdout in the foreground, the pipe when detached.
pub struct Ready {
    pipe: Option<File>,
    detached: bool,
}

impl Ready {
    pub fn none() -> Self {
        Self {
            pipe: None,
            detached: false,
        }
    }

    /// In the detached child: our own session, the pipe kept aside, stdout pointed at the log.
    pub fn take() -> anyhow::Result<Self> {
        // An operator's Ctrl-C or closed terminal must not reach the server.
        let _ = nix::unistd::setsid();
        let pipe = nix::unistd::dup(std::io::stdout())
            .and_then(|p| nix::unistd::dup2_stdout(std::io::stderr()).map(|()| p))
            .map_err(|e| CmError::Other(format!("setting up the readiness pipe: {e}")))?;
        Ok(Self {
            pipe: Some(File::from(pipe)),
            detached: true,
        })
    }

    pub fn say(&mut self, line: &str) {
        if self.detached {
            if let Some(mut pipe) = self.pipe.take() {
                // The starter may have given up already; that is its business.
                let _ = writeln!(pipe, "{line}");
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Tells the starter why we did not come up (once), and hands the error back.
    pub fn fail(&mut self, e: anyhow::Error) -> anyhow::Error {
        if self.pipe.is_some() {
            tracing::error!("cm web stopped: {e:#}");
            self.say(&format!("error {}: {e:#}", code_for(&e) as u8));
        }
        e
    }
}

pub fn lock_pid_file(cfg: &Config) -> anyhow::Result<PidLock> {
    let path = pid_file(cfg);
    PidLock::acquire(&path).map_err(|e| match e {
        AcquireError::Held { pid, .. } => CmError::Other(format!(
            "cm web is already running (pid {pid}, {})",
            path.display()
        ))
        .into(),
        AcquireError::Io { ref cause, .. }
            if cause.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            CmError::Permission {
                message: format!("{e} (run with sudo, or set [paths] pid_dir)"),
            }
            .into()
        }
        other => anyhow::Error::from(CmError::Other(other.to_string())),
    })
}

/// `cm web --detach`: spawns the detached server and returns once it listens.
pub async fn start(cfg: &Config, bind: Option<&str>) -> anyhow::Result<Code> {
    let started = spawn_server(cfg, bind).await?;
    println!("listening on {}", started.url);
    println!(
        "pid {}, pid file {}, log {}",
        started.pid,
        started.pid_file.display(),
        started.log_file.display()
    );
    Ok(Code::Success)
}

/// Spawns the detached server and returns once it listens (or says why it cannot).
pub async fn spawn_server(cfg: &Config, bind: Option<&str>) -> anyhow::Result<Started> {
    ensure_writable_dir(&cfg.pid_dir, "pid dir", "pid_dir")?;
    ensure_writable_dir(&cfg.log_dir, "log dir", "log_dir")?;
    let pid_path = pid_file(cfg);
    if let Ok(Inspection::Live(live)) = pidfile::inspect(&pid_path) {
        let pid = live.pid.map_or_else(|| "?".into(), |p| p.to_string());
        return Err(CmError::Other(format!(
            "cm web is already running (pid {pid}, {}); stop it first",
            pid_path.display()
        ))
        .into());
    }
    let log_path = log_file(cfg);
    let log = crate::control::spawn::open_log(&log_path)?;
    let exe = crate::control::spawn::cm_binary()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--config")
        .arg(&cfg.path)
        .arg("web")
        .arg("--detached");
    if let Some(bind) = bind {
        cmd.arg("--bind").arg(bind);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| CmError::Other(format!("cannot start cm web: {e}")))?;
    let pid = child.id().unwrap_or(0);
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CmError::Other("cm web stdout was not piped".into()))?;
    let mut line = String::new();
    let deadline = Instant::now() + cfg.start_timeout;
    let read = tokio::time::timeout_at(deadline, BufReader::new(stdout).read_line(&mut line)).await;
    let line = line.trim();
    match read {
        Ok(Ok(_)) if line.starts_with("listening on ") => Ok(Started {
            url: line.trim_start_matches("listening on ").to_string(),
            pid,
            pid_file: pid_path,
            log_file: log_path,
        }),
        Ok(Ok(_)) if line.starts_with("error") => {
            let rest = line.trim_start_matches("error").trim_start();
            let (code, why) = match rest.split_once(": ") {
                Some((n, why)) => (n.parse().map_or(Code::Failure, Code::from_raw), why),
                None => (Code::Failure, rest),
            };
            Err(CmError::Partial {
                message: format!("cm web did not start: {why}"),
                code,
            }
            .into())
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(CmError::Partial {
                message: format!(
                    "cm web was not listening by the start deadline; see {}",
                    log_path.display()
                ),
                code: Code::TempFail,
            }
            .into())
        }
        Ok(_) => Err(CmError::Other(format!(
            "cm web exited before it was listening; see {}",
            log_path.display()
        ))
        .into()),
    }
}

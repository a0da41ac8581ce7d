//! The detached web server as a supervised process (its serving is `crate::web`'s): `cm web
//! --detach` and `cm server start|stop|clean|status` through the same spawn, pid-file, /proc
//! and stop rules as the workers. It is `cm --config PATH web --detached [--bind ADDR]`; its ready
//! line is `listening on http://ADDR` (`https://` with `[web] tls_cert`); it holds `cm-web.pid`, logs to `cm-web.log`, and writes
//! where it listens to `cm-web.addr`.

use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use super::detach::ReadyPipe;
use super::pidfile::{self, Inspection, PidLock};
use super::procs;
use super::role::Role;
use super::spawn::{self, ensure_writable_dir, NotReady};
use super::stop::{self, pid_error, Claim, StopLine};
use crate::config::Config;
use crate::exit::{CmError, Code};

/// The server finishes requests in flight within its request timeout (10 s); then it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// The name on its report lines, beside the workers'.
pub const NAME: &str = "web";
const LISTENING: &str = "listening on ";

fn pid_file(cfg: &Config) -> PathBuf {
    Role::Web.pid_file(cfg)
}

fn log_file(cfg: &Config) -> PathBuf {
    Role::Web.log_file(cfg)
}

/// `http[s]://ADDR` the detached server listens on, written once it is bound (the pid file holds
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
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    (scheme_ok && url.len() < 300).then(|| url.to_string())
}

/// Removes the address file once no server holds the pid file.
fn forget_addr(cfg: &Config) {
    if matches!(pidfile::inspect(&pid_file(cfg)), Ok(Inspection::Absent)) {
        let _ = std::fs::remove_file(addr_file(cfg));
    }
}

/// Where the server says it listens: stdout in the foreground, the readiness pipe when detached.
pub struct Ready {
    pipe: Option<ReadyPipe>,
    detached: bool,
}

impl Ready {
    pub fn none() -> Self {
        Self {
            pipe: None,
            detached: false,
        }
    }

    /// In the detached child: its own session, the pipe kept aside, stdout pointed at the log.
    pub fn take() -> anyhow::Result<Self> {
        let pipe = ReadyPipe::take()
            .map_err(|e| CmError::Other(format!("setting up the readiness pipe: {e}")))?;
        Ok(Self {
            pipe: Some(pipe),
            detached: true,
        })
    }

    pub fn say(&mut self, line: &str) {
        if self.detached {
            if let Some(pipe) = self.pipe.take() {
                pipe.say(line);
            }
        } else {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Tells the starter why we did not come up (once), and hands the error back.
    pub fn fail(&mut self, e: anyhow::Error) -> anyhow::Error {
        if let Some(pipe) = self.pipe.take() {
            tracing::error!("cm web stopped: {e:#}");
            pipe.fail(&e);
        }
        e
    }
}

/// The detached server's own pid file, held for its whole life.
pub fn lock_pid_file(cfg: &Config) -> anyhow::Result<PidLock> {
    Ok(pidfile::lock(cfg, &Role::Web)?)
}

/// A detached server that said it listens.
#[derive(Debug, Clone)]
pub struct Started {
    /// `http://ADDR` or `https://ADDR`
    pub url: String,
    pub pid: u32,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
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
    let extra = bind.map_or_else(Vec::new, |b| vec!["--bind", b]);
    let mut starting = spawn::spawn(cfg, &Role::Web, &extra)?;
    let deadline = Instant::now() + cfg.start_timeout;
    let said = starting
        .wait_ready(deadline, |line| line.starts_with(LISTENING))
        .await;
    let not_ready = match said {
        Ok(line) => {
            return Ok(Started {
                url: line.trim_start_matches(LISTENING).to_string(),
                pid: starting.pid.as_raw().unsigned_abs(),
                pid_file: pid_path,
                log_file: log_path,
            })
        }
        Err(not_ready) => not_ready,
    };
    starting.reap().await;
    Err(match not_ready {
        NotReady::Refused { code, why } => CmError::Partial {
            message: format!("cm web did not start: {why}"),
            code,
        },
        NotReady::Deadline => CmError::Partial {
            message: format!(
                "cm web was not listening by the start deadline; see {}",
                log_path.display()
            ),
            code: Code::TempFail,
        },
        NotReady::Ended { .. } => CmError::Other(format!(
            "cm web exited before it was listening; see {}",
            log_path.display()
        )),
    }
    .into())
}

/// SIGTERM, wait up to `grace` for requests in flight, then SIGKILL; the pid file is gone after.
/// One `NotRunning` line when there was nothing to stop.
pub async fn stop(cfg: &Config, grace: Duration) -> Result<Vec<StopLine>, CmError> {
    let lines = stop::stop(cfg, &[Role::Web], grace).await?;
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
    let path = pid_file(cfg);
    let mut victims = Vec::new();
    // A stale or foreign pid file is never signalled; a stale one is removed.
    match stop::claim(cfg, &Role::Web).map_err(|e| pid_error(&path, e))? {
        Claim::Stale => {
            pidfile::remove_if_stale(&path).map_err(|e| pid_error(&path, e))?;
            report.stale_removed.push(path.clone());
        }
        Claim::Ours(target) => victims.push(target),
        Claim::Absent | Claim::Foreign(_) => {}
    }
    for found in procs::running(&cfg.path) {
        if found.role == Role::Web && !victims.iter().any(|t| t.pid == found.pid) {
            victims.push(stop::Target::orphan(found, &cfg.path));
        }
    }
    report.killed = victims
        .iter()
        .map(|t| (t.pid.as_raw(), t.is_orphan()))
        .collect();
    stop::kill_now(victims).await?;
    match pidfile::remove_if_stale(&path) {
        Ok(true) if !report.stale_removed.contains(&path) => report.stale_removed.push(path),
        Ok(_) => {}
        Err(e) => return Err(pid_error(&pid_file(cfg), e)),
    }
    forget_addr(cfg);
    if remove_logs {
        let log = log_file(cfg);
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
    let (state, pid) = stop::state(cfg, &Role::Web, &procs::running(&cfg.path));
    let alive = matches!(state, "running" | "orphan");
    let url = alive
        .then(|| read_addr(cfg))
        .flatten()
        .unwrap_or_else(|| format!("{}://{}", crate::web::scheme(cfg), cfg.web_bind));
    let alive_pid = pid.filter(|_| alive);
    WebStatus {
        url,
        pid: pid.map(Pid::as_raw),
        state,
        enabled: cfg.web_enabled,
        uptime_seconds: alive_pid.and_then(procs::uptime).map(|d| d.as_secs()),
        memory_bytes: alive_pid.and_then(procs::rss_bytes),
    }
}

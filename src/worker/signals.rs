//! A worker process's signals: SIGTERM and SIGINT begin a warm shutdown (`shutdown`), SIGHUP
//! reopens the log after rotation, SIGXFSZ is caught so a full log loses lines, not the worker.
//! A worker run in-process (`serve`) installs none of them.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

/// Installs SIGTERM and SIGINT now (before `ready`, so a stop right after start is a warm
/// shutdown); the future ends with the name of the first to arrive.
pub(super) fn stop_signals() -> anyhow::Result<impl Future<Output = &'static str> + Send + 'static>
{
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Keeps the log's handlers installed for as long as it lives.
pub(super) struct LogSignals {
    _file_too_big: Signal,
}

/// SIGHUP reopens `log` (detached, our stdout and stderr are that file: logrotate's postrotate
/// sends SIGHUP); with no log file of our own it only says so.
pub(super) fn handle_log_signals(log: Option<PathBuf>) -> anyhow::Result<LogSignals> {
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // A log at the file size limit must fail the write (and lose the line), not kill the worker:
    // having a handler replaces SIGXFSZ's default action, which is to terminate.
    let file_too_big = signal(SignalKind::from_raw(nix::libc::SIGXFSZ))
        .context("installing the SIGXFSZ handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &log {
                Some(path) => reopen_log(path),
                None => info!("SIGHUP: logging to the terminal or journal; nothing to reopen"),
            }
        }
    });
    Ok(LogSignals {
        _file_too_big: file_too_big,
    })
}

/// Points stdout and stderr at a fresh file at `path` (the old one was rotated away).
fn reopen_log(path: &Path) {
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

//! A worker's signals: SIGTERM and SIGINT (or `shutdown` over remote control) begin a warm
//! shutdown, SIGHUP reopens the log after rotation, SIGXFSZ is caught so a full log loses
//! lines, not the worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tracing::{info, warn};

/// SIGTERM and SIGINT, installed before `ready` so a stop right after start is a warm shutdown;
/// and `shutdown` over Celery's remote control, which stops the same way.
pub(super) struct Stop {
    term: Signal,
    int: Signal,
    remote: Arc<Notify>,
}

/// Asks for the warm shutdown a SIGTERM starts (`celery control shutdown`).
#[derive(Clone)]
pub(super) struct RemoteStop(Arc<Notify>);

impl RemoteStop {
    pub(super) fn request(&self) {
        // Kept until `Stop::next` looks, if nobody waits right now.
        self.0.notify_one();
    }
}

impl Stop {
    pub(super) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            remote: Arc::new(Notify::new()),
        })
    }

    pub(super) fn remote(&self) -> RemoteStop {
        RemoteStop(self.remote.clone())
    }

    /// The name of the next stop signal to arrive.
    pub(super) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.remote.notified() => "remote shutdown",
        }
    }
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

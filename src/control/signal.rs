//! Signals with a deadline: TERM, wait, KILL — only ever to a pid proven to be our worker.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

/// How often a waiting stop looks again; short, since an idle worker exits in milliseconds.
const POLL: Duration = Duration::from_millis(5);

pub fn send(pid: Pid, signal: Signal) -> nix::Result<()> {
    match kill(pid, signal) {
        // Already gone: what we wanted.
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Polls `done` until it is true or `deadline` passes; returns whether it became true.
pub async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

//! Stopping with a deadline, the one way cm stops anything: send the first signal (TERM, or
//! KILL for `clean`), wait until the grace period ends, SIGKILL what is left, and give the
//! kernel `KILL_WAIT` more. What is stopped is a [`Stoppable`]: a daemon by its pid, once /proc
//! proved it ours (`stop.rs`), or a process group (`group.rs`).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

/// How often a waiting stop looks again; short, since an idle worker exits in milliseconds.
const POLL: Duration = Duration::from_millis(5);
/// After SIGKILL the kernel needs a moment; more than this means something is badly wrong.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// `kill(2)`; a process already gone is what we wanted.
pub fn send(pid: Pid, signal: Signal) -> nix::Result<()> {
    match kill(pid, signal) {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Something to stop: how to signal it, and how to tell that it is gone.
pub trait Stoppable {
    /// Sends `signal`; one already gone is not an error.
    fn signal(&mut self, signal: Signal) -> nix::Result<()>;
    /// True once nothing of it runs (and whatever it held, its pid file lock, is free).
    fn gone(&mut self) -> bool;
}

/// One target, gone.
#[derive(Debug)]
pub struct Stopped<T> {
    pub target: T,
    /// It outlived the grace period and was sent SIGKILL.
    pub killed: bool,
    /// From the first signal until it was seen gone.
    pub after: Duration,
}

#[derive(Debug)]
pub enum StopError<T> {
    /// The first signal could not be sent to `target` (EPERM: someone else's process).
    /// Targets before it were signalled; none was waited for.
    Signal { target: T, error: nix::Error },
    /// Still there `KILL_WAIT` after SIGKILL (a process in uninterruptible sleep, most likely).
    StillRunning {
        stopped: Vec<Stopped<T>>,
        left: Vec<T>,
    },
}

/// Sends `first` to every target, waits until `grace` has passed for each to be gone, SIGKILLs
/// the rest, and waits up to [`KILL_WAIT`] more. The targets come back as they went.
pub async fn stop_all<T: Stoppable>(
    targets: Vec<T>,
    first: Signal,
    grace: Duration,
) -> Result<Vec<Stopped<T>>, StopError<T>> {
    stop_within(targets, first, grace, KILL_WAIT).await
}

async fn stop_within<T: Stoppable>(
    mut targets: Vec<T>,
    first: Signal,
    grace: Duration,
    kill_wait: Duration,
) -> Result<Vec<Stopped<T>>, StopError<T>> {
    let began = Instant::now();
    let refused = targets
        .iter_mut()
        .enumerate()
        .find_map(|(i, t)| t.signal(first).err().map(|error| (i, error)));
    if let Some((i, error)) = refused {
        let target = targets.swap_remove(i);
        return Err(StopError::Signal { target, error });
    }
    let grace_deadline = began + grace;
    let mut kill_deadline = None;
    let mut stopped = Vec::with_capacity(targets.len());
    loop {
        let now = Instant::now();
        let mut left = Vec::with_capacity(targets.len());
        for mut t in targets {
            if t.gone() {
                stopped.push(Stopped {
                    target: t,
                    killed: kill_deadline.is_some(),
                    after: began.elapsed(),
                });
            } else {
                left.push(t);
            }
        }
        targets = left;
        if targets.is_empty() {
            return Ok(stopped);
        }
        if now >= grace_deadline && kill_deadline.is_none() {
            for t in &mut targets {
                // Nothing better to do about a refused SIGKILL than to report it still running.
                let _ = t.signal(Signal::SIGKILL);
            }
            kill_deadline = Some(now + kill_wait);
        }
        if kill_deadline.is_some_and(|d| now >= d) {
            return Err(StopError::StillRunning {
                stopped,
                left: targets,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gone once it was sent `heeds`; never, if `None`.
    struct Fake {
        heeds: Option<Signal>,
        got: Vec<Signal>,
        refuse: bool,
    }

    impl Stoppable for Fake {
        fn signal(&mut self, signal: Signal) -> nix::Result<()> {
            if self.refuse {
                return Err(Errno::EPERM);
            }
            self.got.push(signal);
            Ok(())
        }
        fn gone(&mut self) -> bool {
            self.heeds.is_some_and(|s| self.got.contains(&s))
        }
    }

    fn fake(heeds: Option<Signal>) -> Fake {
        Fake {
            heeds,
            got: Vec::new(),
            refuse: false,
        }
    }

    #[tokio::test]
    async fn the_willing_stop_at_once_the_stubborn_are_killed_after_the_grace() {
        let grace = Duration::from_millis(100);
        let targets = vec![fake(Some(Signal::SIGTERM)), fake(Some(Signal::SIGKILL))];
        let stopped = match stop_all(targets, Signal::SIGTERM, grace).await {
            Ok(s) => s,
            Err(_) => panic!("both should be gone"),
        };
        assert_eq!(stopped.len(), 2);
        assert!(!stopped[0].killed && stopped[0].after < grace);
        assert_eq!(stopped[0].target.got, [Signal::SIGTERM]);
        assert!(stopped[1].killed && stopped[1].after >= grace);
        assert_eq!(stopped[1].target.got, [Signal::SIGTERM, Signal::SIGKILL]);
    }

    #[tokio::test]
    async fn one_that_survives_sigkill_is_reported_after_the_kill_wait() {
        let began = Instant::now();
        let kill_wait = Duration::from_millis(100);
        let targets = vec![fake(Some(Signal::SIGTERM)), fake(None)];
        match stop_within(targets, Signal::SIGTERM, Duration::ZERO, kill_wait).await {
            Err(StopError::StillRunning { stopped, left }) => {
                assert_eq!((stopped.len(), left.len()), (1, 1));
                assert_eq!(left[0].got, [Signal::SIGTERM, Signal::SIGKILL]);
                assert!(began.elapsed() >= kill_wait);
            }
            _ => panic!("one should be left"),
        }
    }

    #[tokio::test]
    async fn a_refused_first_signal_is_an_error_and_nothing_is_waited_for() {
        let mut refusing = fake(Some(Signal::SIGTERM));
        refusing.refuse = true;
        let targets = vec![fake(Some(Signal::SIGTERM)), refusing];
        match stop_all(targets, Signal::SIGTERM, Duration::from_secs(10)).await {
            Err(StopError::Signal { target, error }) => {
                assert!(target.refuse);
                assert_eq!(error, Errno::EPERM);
            }
            _ => panic!("the refusal should be reported"),
        }
    }
}

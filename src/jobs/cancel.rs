//! Ending running jobs early: a revoke with terminate reaches one job by id, the worker's
//! shutdown (its grace over) reaches all. One watch channel per worker, subscribed by each job
//! as it starts: no allocation per job beyond the subscription.

use std::collections::HashMap;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::sync::watch;

/// The signals a revoke with terminate may send a command's group first (SIGKILL follows after
/// its grace either way); others (STOP, CHLD, ...) would not end it.
pub const SIGNALS: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGKILL,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signal called `name`, with or without `SIG`, in any case (`TERM`, `sigkill`, `USR1`).
pub fn signal_named(name: &str) -> Result<Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .into_iter()
        .find(|s| s.as_str().strip_prefix("SIG") == Some(bare))
        .ok_or_else(|| {
            let known: Vec<&str> = SIGNALS.iter().map(|s| &s.as_str()[3..]).collect();
            format!(
                "unknown signal {name:?}: use one of {} (SIG prefix optional)",
                known.join(", ")
            )
        })
}

/// What a running job is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Revoked with terminate: a command's group gets `signal`, then SIGKILL after the grace.
    Terminate(Signal),
    /// The worker is stopping and its grace is over: the job goes back to the queue.
    Shutdown,
}

#[derive(Debug, Clone, Default)]
struct Asked {
    shutdown: bool,
    /// Jobs asked one by one: a revoke's terminate, or a lapsed lease's interrupt.
    one: Arc<HashMap<Arc<str>, Cancel>>,
}

/// The worker's side: ask running jobs to end.
#[derive(Debug, Clone)]
pub struct Stops {
    tx: Arc<watch::Sender<Asked>>,
}

impl Default for Stops {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(Asked::default())),
        }
    }
}

impl Stops {
    /// What job `id` listens to for its own end.
    pub fn for_job(&self, id: Arc<str>) -> CancelRx {
        CancelRx {
            rx: Some(self.tx.subscribe()),
            id,
        }
    }

    /// Asks job `id` (if it runs here) to end with `signal`.
    pub fn terminate(&self, id: &str, signal: Signal) {
        self.ask(id, Cancel::Terminate(signal));
    }

    /// Asks job `id` (if it runs here) to stop and go back to the queue, as at shutdown: its
    /// lease lapsed, so another worker may run it from now on.
    pub fn interrupt(&self, id: &str) {
        self.ask(id, Cancel::Shutdown);
    }

    fn ask(&self, id: &str, cancel: Cancel) {
        self.tx.send_modify(|asked| {
            Arc::make_mut(&mut asked.one).insert(Arc::from(id), cancel);
        });
    }

    /// Forgets what job `id` was asked once it has ended; returns it (a terminate's signal is
    /// in the job's `task-revoked` event).
    pub fn forget(&self, id: &str) -> Option<Cancel> {
        if !self.tx.borrow().one.contains_key(id) {
            return None;
        }
        let mut was = None;
        self.tx.send_if_modified(|asked| {
            was = Arc::make_mut(&mut asked.one).remove(id);
            was.is_some()
        });
        was
    }

    /// Asks every running job to end: the worker is stopping.
    pub fn shutdown(&self) {
        self.tx.send_modify(|asked| asked.shutdown = true);
    }
}

/// One job's side: resolves when the job is asked to end.
#[derive(Debug)]
pub struct CancelRx {
    rx: Option<watch::Receiver<Asked>>,
    id: Arc<str>,
}

impl CancelRx {
    /// A job nobody can cancel.
    pub fn never() -> Self {
        Self {
            rx: None,
            id: Arc::from(""),
        }
    }

    /// Waits until this job is asked to end (cancel-safe). Never returns if it cannot be.
    pub async fn asked(&mut self) -> Cancel {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            {
                let asked = rx.borrow_and_update();
                if let Some(cancel) = asked.one.get(&self.id) {
                    return *cancel;
                }
                if asked.shutdown {
                    return Cancel::Shutdown;
                }
            }
            if rx.changed().await.is_err() {
                self.rx = None;
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_with_or_without_sig_in_any_case() {
        assert_eq!(signal_named("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal_named("sigkill"), Ok(Signal::SIGKILL));
        assert_eq!(signal_named("USR1"), Ok(Signal::SIGUSR1));
        assert_eq!(signal_named(" SIGHUP "), Ok(Signal::SIGHUP));
        for bad in ["", "SIG", "STOP", "SIGCHLD", "9", "TERMX"] {
            let e = signal_named(bad).expect_err(bad);
            assert!(e.contains("use one of TERM, KILL, INT"), "{e}");
        }
    }

    #[test]
    fn a_terminate_reaches_its_job_only_and_a_shutdown_reaches_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let stops = Stops::default();
            let (mut a, mut b) = (stops.for_job("a".into()), stops.for_job("b".into()));
            stops.terminate("a", Signal::SIGINT);
            assert_eq!(a.asked().await, Cancel::Terminate(Signal::SIGINT));
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(50), b.asked()).await;
            assert!(waited.is_err(), "b was not asked");
            stops.forget("a");
            stops.shutdown();
            assert_eq!(b.asked().await, Cancel::Shutdown);
            let mut late = stops.for_job("c".into());
            assert_eq!(late.asked().await, Cancel::Shutdown);
        });
    }
}

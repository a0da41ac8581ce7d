//! What cm signals when it stops a command: its process group, and, unless the task keeps
//! them (`keep_children`), its strays, the processes it started that left the group
//! (`control::strays`).

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;

use crate::control::group::ProcessGroup;
use crate::control::kill::Stoppable;
use crate::control::strays::Owner;

/// Why cm signals a command's processes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Why {
    TimeLimit,
    Terminate(Signal),
    Shutdown,
    /// The leader exited; members it left behind go with it.
    LeftBehind,
}

/// A running command's processes: its group, and the strays cm stops with it.
pub(super) struct Processes {
    group: ProcessGroup,
    /// `None`: the task keeps what its command leaves (`keep_children`).
    strays: Option<Owner>,
}

impl Processes {
    pub(super) fn new(group: ProcessGroup, job_id: &str, keep_children: bool) -> Self {
        let strays = (!keep_children).then(|| Owner::new(job_id, group.pgid()));
        Self { group, strays }
    }

    /// The leader, for its stdin, stdout and stderr.
    pub(super) fn leader(&mut self) -> &mut Child {
        self.group.leader()
    }

    /// Waits for the leader to exit (cancel-safe).
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.group.wait().await
    }

    /// Remembers the strays under the leader now, so that one clearing its environment is still
    /// known once the leader's exit orphans it.
    pub(super) fn note(&mut self) {
        if let Some(strays) = &mut self.strays {
            strays.note();
        }
    }

    /// Whether anything the leader's exit leaves for cm to stop still runs: a member of the
    /// group, or a stray. Never, for a task that keeps what its command leaves.
    pub(super) fn runs(&mut self) -> bool {
        self.strays
            .as_ref()
            .is_some_and(|s| !self.group.is_gone() || !s.find().is_empty())
    }

    /// Sends `signal` to the group and to every stray.
    pub(super) fn signal(&mut self, signal: Signal) -> std::io::Result<()> {
        // Found before the group is signalled: a stray whose parent dies is re-parented, out of
        // reach unless this process is its subreaper.
        let mut strays = self.strays.as_ref().map(Owner::find).unwrap_or_default();
        self.group
            .signal(signal)
            .map_err(|e| std::io::Error::other(format!("signalling the command's group: {e}")))?;
        for stray in &mut strays {
            // A stray that refuses is stopped again, with KILL, by the final stop.
            let _ = Stoppable::signal(stray, signal);
        }
        Ok(())
    }

    /// Stops whatever still runs: the group, then the strays (`first`, KILL after `grace`).
    /// `stopped`: cm stopped the command (a time limit, a terminate, the worker's stop), so its
    /// group ends even when the task keeps what it leaves.
    pub(super) async fn stop(&mut self, first: Signal, grace: Duration, stopped: bool) {
        if (stopped || self.strays.is_some()) && !self.group.is_gone() {
            if let Err(e) = self.group.stop(first, grace).await {
                tracing::warn!("stopping a command's group: {e}");
            }
        }
        if let Some(strays) = &self.strays {
            strays.stop(first, grace).await;
        }
    }
}

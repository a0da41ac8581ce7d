//! A child in a process group of its own, stopped as a whole: what a job's command will be
//! (it runs under the worker, in its own group, so a time limit or a terminate reaches
//! everything it started, and nothing of the worker's). Stopping goes through the same
//! deadline as every stop (`kill::stop_all`): the signal to the group, the grace, SIGKILL to the
//! group.
//!
//! The group's id is its leader's pid. The kernel hands that number to no new process while any
//! member lives, so signalling the group is safe until the last member is gone; after that cm
//! signals it no more (a stop first looks whether anything of it still runs). A member that
//! moves to a group or session of its own has left, and is not stopped with it.

use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::kill::{self, StopError, Stoppable};
use super::{procs, subreaper};

#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
    pgid: Pid,
    /// The leader's exit status, once reaped.
    status: Option<ExitStatus>,
    /// Reaped (or lost to someone else's `wait`): only the rest of the group is left to watch.
    leader_done: bool,
}

/// How a stopped group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStopped {
    /// The leader's exit status, if it was ours to reap.
    pub status: Option<ExitStatus>,
    /// Outlived the grace period and was sent SIGKILL.
    pub killed: bool,
    pub after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot signal process group {pgid}: {error}")]
    Signal { pgid: Pid, error: nix::Error },
    #[error("process group {pgid} still runs {:?} after SIGKILL", kill::KILL_WAIT)]
    StillRunning { pgid: Pid },
}

/// Spawns `cmd` as the leader of a new process group (`setpgid(0, 0)` in the child before it
/// runs the program), so whatever it starts stays in that group.
pub fn spawn(cmd: &mut Command) -> std::io::Result<ProcessGroup> {
    // Registered so the worker's reaper of adopted orphans leaves the leader to tokio.
    let child = subreaper::spawn_registered(|| cmd.process_group(0).spawn(), Child::id)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| std::io::Error::other("the child was reaped before its pid was read"))?;
    Ok(ProcessGroup {
        child,
        pgid: Pid::from_raw(pid),
        status: None,
        leader_done: false,
    })
}

/// [`spawn`], with the leader tied to this process: the kernel SIGKILLs it the moment the
/// spawning thread dies (`PR_SET_PDEATHSIG`), so a worker killed with -9 leaves no job command
/// running. Members the leader started survive it; `procs::job_commands` finds those.
pub fn spawn_tied(cmd: &mut Command) -> std::io::Result<ProcessGroup> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then no signal would come.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "the worker exited while starting the command",
                ));
            }
            Ok(())
        });
    }
    spawn(cmd)
}

impl ProcessGroup {
    pub fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Sends `signal` to every member, unless the group is gone (its id may be someone else's
    /// by then). Whether a signal was sent.
    pub fn signal(&mut self, signal: Signal) -> nix::Result<bool> {
        if self.gone() {
            return Ok(false);
        }
        Stoppable::signal(&mut &mut *self, signal).map(|()| true)
    }

    /// True once the leader is reaped and no member runs.
    pub fn is_gone(&mut self) -> bool {
        self.gone()
    }

    /// The leader, for its stdin, stdout and stderr.
    pub fn leader(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the leader to exit and reaps it (cancel-safe: a time limit can race it in a
    /// `select!`). Members it left behind still run; [`stop`](Self::stop) ends them.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        self.leader_done = true;
        subreaper::forget(self.pgid);
        Ok(status)
    }

    /// Sends `signal` to the whole group, waits up to `grace` for every member to be gone,
    /// SIGKILLs the group, and waits `kill::KILL_WAIT` more. A group already gone is not
    /// signalled: its id may belong to someone else by now.
    pub async fn stop(
        &mut self,
        signal: Signal,
        grace: Duration,
    ) -> Result<GroupStopped, GroupError> {
        if self.gone() {
            return Ok(GroupStopped {
                status: self.status,
                killed: false,
                after: Duration::ZERO,
            });
        }
        let pgid = self.pgid;
        match kill::stop_all(vec![&mut *self], signal, grace).await {
            Ok(stopped) => {
                let (killed, after) = stopped
                    .first()
                    .map_or((false, Duration::ZERO), |s| (s.killed, s.after));
                Ok(GroupStopped {
                    status: self.status,
                    killed,
                    after,
                })
            }
            Err(StopError::Signal { error, .. }) => Err(GroupError::Signal { pgid, error }),
            Err(StopError::StillRunning { .. }) => Err(GroupError::StillRunning { pgid }),
        }
    }

    /// True once the leader is reaped and no member runs.
    fn gone(&mut self) -> bool {
        if !self.leader_done {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => return false,
                // Not our child to reap any more: watch the group alone.
                Err(_) => {}
            }
            self.leader_done = true;
            subreaper::forget(self.pgid);
        }
        let members_run = match killpg(self.pgid, None) {
            Err(Errno::ESRCH) => false,
            // Members left, but each may be a zombie no one reaps, which runs no more.
            _ => procs::group_runs(self.pgid),
        };
        !members_run
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Reaped, or left to tokio's orphan reaping: the subreaper may reap it as well.
        subreaper::forget(self.pgid);
    }
}

impl Stoppable for &mut ProcessGroup {
    fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        match killpg(self.pgid, signal) {
            Err(Errno::ESRCH) => Ok(()),
            other => other,
        }
    }

    fn gone(&mut self) -> bool {
        ProcessGroup::gone(self)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).stdin(Stdio::null());
        cmd
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_sleep_that_heeds_term_ends_within_the_grace() {
        runtime().block_on(async {
            let mut group = spawn(Command::new("sleep").arg("30")).expect("sleep runs");
            assert_eq!(nix::unistd::getpgid(Some(group.pgid())), Ok(group.pgid()));
            let stopped = group
                .stop(Signal::SIGTERM, Duration::from_secs(10))
                .await
                .expect("stopped");
            assert!(!stopped.killed, "{stopped:?}");
            assert!(stopped.after < Duration::from_secs(10), "{stopped:?}");
            assert_eq!(stopped.status.and_then(|s| s.signal()), Some(15));
            assert_eq!(killpg(group.pgid(), None), Err(Errno::ESRCH));
        });
    }

    /// Spawns `script` in a group of its own and waits for its first line of output.
    async fn started(script: &str) -> (ProcessGroup, String) {
        let mut cmd = sh(script);
        let mut group = spawn(cmd.stdout(Stdio::piped())).expect("sh runs");
        let stdout = group.leader().stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("its first line");
        (group, line.trim().to_string())
    }

    #[test]
    fn a_sleep_that_ignores_term_is_killed_after_the_grace() {
        runtime().block_on(async {
            // An ignored signal stays ignored across exec: the sleep ignores TERM too.
            let (mut group, said) = started("trap '' TERM; echo trapped; sleep 30; true").await;
            assert_eq!(said, "trapped");
            let grace = Duration::from_millis(300);
            let stopped = group.stop(Signal::SIGTERM, grace).await.expect("stopped");
            assert!(stopped.killed, "{stopped:?}");
            assert!(stopped.after >= grace, "{stopped:?}");
            assert_eq!(stopped.status.and_then(|s| s.signal()), Some(9));
            assert!(!procs::group_runs(group.pgid()));
        });
    }

    #[test]
    fn a_member_the_leader_left_behind_is_killed_with_the_group() {
        runtime().block_on(async {
            // The member says its pid once it ignores TERM; the leader waits for it.
            let (mut group, said) =
                started("sh -c 'trap \"\" TERM; echo $$; exec sleep 30' & wait").await;
            let member = Pid::from_raw(said.parse().expect("the member's pid"));
            assert_ne!(member, group.pgid());
            assert_eq!(nix::unistd::getpgid(Some(member)), Ok(group.pgid()));
            let grace = Duration::from_millis(300);
            let stopped = group.stop(Signal::SIGTERM, grace).await.expect("stopped");
            // The leader heeded TERM; its member did not, and held the group until the KILL.
            assert_eq!(stopped.status.and_then(|s| s.signal()), Some(15));
            assert!(stopped.killed, "{stopped:?}");
            assert!(procs::is_dead(member));
            assert!(!procs::group_runs(group.pgid()));
        });
    }

    #[test]
    fn a_group_that_ended_by_itself_is_not_signalled() {
        runtime().block_on(async {
            let mut group = spawn(&mut sh("exit 3")).expect("sh runs");
            let status = group.wait().await.expect("exit status");
            assert_eq!(status.code(), Some(3));
            let stopped = group
                .stop(Signal::SIGTERM, Duration::from_secs(1))
                .await
                .expect("nothing to stop");
            assert_eq!(stopped.after, Duration::ZERO);
            assert_eq!(stopped.status.and_then(|s| s.code()), Some(3));
        });
    }
}

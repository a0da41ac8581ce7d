//! A job's strays: processes its command started that left the command's process group
//! (`setsid`, a double fork, `setpgid`), so a signal to the group misses them. The worker is
//! their subreaper (`subreaper`), so however they detach they stay its descendants; among those,
//! a job's strays are the ones still under its command's leader, or carrying its `CM_JOB_ID`
//! (inherited from the command: what the leader's exit orphaned), or noted under the leader
//! before, started after the leader. Each is proven the same process (pid and start time) before
//! every signal: a pid reused by a stranger is never signalled, and a process that is not this
//! worker's descendant is never even a candidate.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::kill::{self, Stoppable};

/// Rounds of find-and-stop: a stray may fork while it is being stopped.
const ROUNDS: usize = 3;
/// A process in the middle of an exec shows no environment for a moment.
const EXEC_PAUSE: Duration = Duration::from_millis(2);
/// Beyond this many descendants the walk stops: a fork bomb must not stall the worker.
const MAX_DESCENDANTS: usize = 100_000;

/// Whose strays: a job's id, and its command's leader (its group's id and start time).
#[derive(Debug, Clone)]
pub struct Owner {
    /// `CM_JOB_ID=<id>`, as it appears in /proc/PID/environ.
    env_entry: Vec<u8>,
    leader: Pid,
    /// The leader's start time (clock ticks since boot): a stray of this run started after it.
    since: u64,
    /// Strays seen under the leader while it ran ([`note`](Self::note)): kept even when they
    /// clear their environment (`env -i`) before the leader's exit orphans them.
    seen: Vec<(Pid, u64)>,
}

impl Owner {
    /// The strays of job `job_id`, whose command's leader is `leader` (alive now).
    pub fn new(job_id: &str, leader: Pid) -> Self {
        Self {
            env_entry: format!("CM_JOB_ID={job_id}").into_bytes(),
            leader,
            since: stat_of(leader).map_or(0, |s| s.starttime),
            seen: Vec::new(),
        }
    }

    /// Remembers the strays alive now (the worker calls this while the command runs), and
    /// forgets those gone: a long script's many short-lived children do not pile up.
    pub fn note(&mut self) {
        // `find` gives those noted before that still live, and the ones under the leader now.
        self.seen = self.find().into_iter().map(|s| (s.pid, s.start)).collect();
    }

    /// `pid` as a stray of this job: under its leader (while that lives), or carrying its
    /// `CM_JOB_ID`; started after the leader either way.
    fn owns(&self, pid: Pid, under_leader: bool) -> Option<Stray> {
        if pid == self.leader {
            return None;
        }
        let stat = stat_of(pid)?;
        if stat.starttime < self.since || matches!(stat.state, 'Z' | 'X') {
            return None;
        }
        let stray = Stray {
            pid,
            start: stat.starttime,
        };
        if under_leader {
            return Some(stray);
        }
        // Unreadable (a setuid program's): not known by its environment.
        let read = || std::fs::read(format!("/proc/{pid}/environ")).ok();
        let mut env = read()?;
        if env.is_empty() {
            // Caught in the middle of an exec, its new environment not yet in place.
            std::thread::sleep(EXEC_PAUSE);
            env = read()?;
        }
        env.split(|b| *b == 0)
            .any(|e| e == self.env_entry.as_slice())
            .then_some(stray)
    }

    /// The job's strays alive now, among this process's descendants, and those noted before.
    pub fn find(&self) -> Vec<Stray> {
        // The leader's subtree is the job's whatever its environment says (`env -i`), while the
        // leader is still the process that started it.
        let leader_lives = stat_of(self.leader).is_some_and(|s| s.starttime == self.since);
        let mut found: Vec<Stray> =
            descendants_of(Pid::this(), leader_lives.then_some(self.leader))
                .into_iter()
                .filter_map(|(pid, under_leader)| self.owns(pid, under_leader))
                .collect();
        for &(pid, start) in &self.seen {
            let stray = Stray { pid, start };
            if !found.iter().any(|f| f.pid == pid) && stray.is_still_it() {
                found.push(stray);
            }
        }
        found
    }

    /// Stops every stray (`first`, then SIGKILL after `grace`), again while new ones appear;
    /// the pids stopped.
    pub async fn stop(&self, first: Signal, grace: Duration) -> Vec<Pid> {
        let mut stopped = Vec::new();
        for _ in 0..ROUNDS {
            let strays = self.find();
            if strays.is_empty() {
                break;
            }
            stopped.extend(strays.iter().map(|s| s.pid));
            if let Err(e) = kill::stop_all(strays, first, grace).await {
                tracing::warn!("stopping what a job's command left running: {e:?}");
            }
        }
        stopped
    }
}

/// One process of a job (other than its command's leader), known by pid and start time.
#[derive(Debug)]
pub struct Stray {
    pub pid: Pid,
    start: u64,
}

impl Stray {
    fn is_still_it(&self) -> bool {
        stat_of(self.pid)
            .is_some_and(|s| s.starttime == self.start && !matches!(s.state, 'Z' | 'X'))
    }
}

impl Stoppable for Stray {
    fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        // Proven again before every signal: once it is gone, its pid can be someone else's.
        if self.is_still_it() {
            kill::send(self.pid, signal)
        } else {
            Ok(())
        }
    }

    fn gone(&mut self) -> bool {
        !self.is_still_it()
    }
}

fn stat_of(pid: Pid) -> Option<procfs::process::Stat> {
    procfs::process::Process::new(pid.as_raw())
        .ok()?
        .stat()
        .ok()
}

/// The children of `pid` (of each of its threads), zombies included.
pub fn children_of(pid: Pid) -> Vec<Pid> {
    match children_listed(pid) {
        Some(children) => children,
        // A kernel without /proc/PID/task/TID/children: every process's parent instead.
        None => procfs::process::all_processes()
            .map(|all| {
                all.filter_map(Result::ok)
                    .filter_map(|p| p.stat().ok())
                    .filter(|s| s.ppid == pid.as_raw())
                    .map(|s| Pid::from_raw(s.pid))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `None` when the kernel does not list children (CONFIG_PROC_CHILDREN off).
fn children_listed(pid: Pid) -> Option<Vec<Pid>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                return None
            }
            // The thread ended while being read.
            Err(_) => {}
        }
    }
    Some(children)
}

/// Every descendant of `root`, parents before their children, each with whether it descends
/// from `leader`.
fn descendants_of(root: Pid, leader: Option<Pid>) -> Vec<(Pid, bool)> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut next = vec![(root, false)];
    while let Some((pid, under_leader)) = next.pop() {
        let under = under_leader || Some(pid) == leader;
        for child in children_of(pid) {
            if found.len() >= MAX_DESCENDANTS {
                return found;
            }
            if seen.insert(child) {
                found.push((child, under));
                next.push((child, under));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn a_child_is_found_by_its_job_id_and_a_stranger_is_not() {
        let mut ours = Command::new("sleep")
            .arg("30")
            .env("CM_JOB_ID", "job-1")
            .spawn()
            .expect("sleep runs");
        let mut other = Command::new("sleep")
            .arg("30")
            .env("CM_JOB_ID", "job-2")
            .spawn()
            .expect("sleep runs");
        let pid = |c: &std::process::Child| Pid::from_raw(c.id() as i32);
        // A leader none of them descends from, started before both: only the id tells.
        let owner = Owner::new("job-1", Pid::from_raw(1));
        let found: Vec<Pid> = owner.find().iter().map(|s| s.pid).collect();
        assert!(found.contains(&pid(&ours)), "{found:?}");
        assert!(!found.contains(&pid(&other)), "{found:?}");
        for mut stray in owner.find() {
            assert_eq!(stray.pid, pid(&ours));
            Stoppable::signal(&mut stray, Signal::SIGKILL).expect("killed");
        }
        let _ = ours.wait();
        assert!(owner.find().is_empty());
        let _ = other.kill();
        let _ = other.wait();
    }
}

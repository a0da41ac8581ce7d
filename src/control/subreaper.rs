//! The worker as the subreaper of what its jobs start (`PR_SET_CHILD_SUBREAPER`): a process a
//! job's command leaves behind, daemonised (`setsid`, a double fork) or not, is re-parented to
//! the worker instead of to init, so it stays a descendant the worker can find and stop
//! (`strays`). Adopted processes end as the worker's zombies, so the worker reaps them too.
//!
//! Only adopted children are reaped here: a command's leader is tokio's to reap (its exit
//! status is the job's), so every leader is registered while it is spawned, under the same lock
//! the reaper takes, and a reap never races a spawn.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A SIGCHLD may be coalesced with another or missed while a reap runs: look again this often.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// The children this process spawned itself (the commands' leaders): never reaped here.
static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn spawned() -> MutexGuard<'static, Option<HashSet<i32>>> {
    // The set stays consistent across a panic elsewhere: each use is one insert or remove.
    SPAWNED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes this process the subreaper of its descendants and starts reaping the ones it adopts.
/// Only a worker process does this: a process-wide setting, never for an in-process worker.
pub fn become_subreaper() -> std::io::Result<tokio::task::JoinHandle<()>> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| std::io::Error::other(format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
    let mut chld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = chld.recv() => {}
                () = tokio::time::sleep(REAP_EVERY) => {}
            }
            reap_adopted();
        }
    }))
}

/// Spawns through `spawn`, registering the child's pid before any reap can look at it.
pub fn spawn_registered<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid_of: impl Fn(&T) -> Option<u32>,
) -> std::io::Result<T> {
    let mut set = spawned();
    let child = spawn()?;
    if let Some(pid) = pid_of(&child).and_then(|p| i32::try_from(p).ok()) {
        set.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

/// `pid` was reaped by its owner (or will never be): it may be reaped here from now on.
pub fn forget(pid: Pid) {
    if let Some(set) = spawned().as_mut() {
        set.remove(&pid.as_raw());
    }
}

/// Reaps every child that exited and that this process did not spawn itself; how many.
pub fn reap_adopted() -> usize {
    let set = spawned();
    let mut reaped = 0;
    for pid in super::strays::children_of(Pid::this()) {
        if set.as_ref().is_some_and(|s| s.contains(&pid.as_raw())) {
            continue;
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => {}
            Ok(_) => reaped += 1,
            Err(e) => tracing::debug!("reaping adopted process {pid}: {e}"),
        }
    }
    reaped
}

//! What /proc says about processes: which role of which config a pid runs (the identity every
//! signal cm sends is checked against), liveness, process groups, uptime and memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;
use procfs::Current;

use super::role::Role;

/// A live process of this cm binary running a role.
#[derive(Debug, Clone)]
pub struct Found {
    pub pid: Pid,
    pub role: Role,
}

/// The binary a process runs; a rebuilt binary shows as "path (deleted)".
fn exe_of(proc: &procfs::process::Process) -> Option<PathBuf> {
    let exe = proc.exe().ok()?;
    let text = exe.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
    ))
}

/// The role `proc` runs and the config it names, if it runs this very binary.
fn role_of(proc: &procfs::process::Process, me: &Path) -> Option<(Role, PathBuf)> {
    if exe_of(proc).as_deref() != Some(me) {
        return None;
    }
    Role::in_argv(&proc.cmdline().ok()?)
}

/// Every live process of this binary running a role for `config`: how orphans (whose pid file
/// is gone) are found.
pub fn running(config: &Path) -> Vec<Found> {
    let Ok(me) = std::env::current_exe() else {
        return Vec::new();
    };
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| {
            let (role, cfg) = role_of(&p, &me)?;
            let pid = Pid::from_raw(p.pid);
            (cfg == config && !is_dead(pid)).then_some(Found { pid, role })
        })
        .collect()
}

/// Whether `pid` is this binary running `role` for `config` (guards every signal to a daemon).
pub fn is(pid: Pid, role: &Role, config: &Path) -> bool {
    let Ok(me) = std::env::current_exe() else {
        return false;
    };
    procfs::process::Process::new(pid.as_raw())
        .ok()
        .and_then(|p| role_of(&p, &me))
        .is_some_and(|(r, c)| r == *role && c == config)
}

/// Gone, or a zombie waiting to be reaped: either way it runs no more.
pub fn is_dead(pid: Pid) -> bool {
    match procfs::process::Process::new(pid.as_raw()).and_then(|p| p.stat()) {
        Ok(stat) => matches!(stat.state, 'Z' | 'X'),
        Err(_) => true,
    }
}

/// Whether any process of group `pgid` still runs. Zombies do not count: a member orphaned to
/// an init that never reaps stays one forever.
pub fn group_runs(pgid: Pid) -> bool {
    let Ok(all) = procfs::process::all_processes() else {
        // Without /proc, assume it runs: the caller then kills it rather than forgetting it.
        return true;
    };
    all.filter_map(Result::ok)
        .filter_map(|p| p.stat().ok())
        .any(|s| s.pgrp == pgid.as_raw() && !matches!(s.state, 'Z' | 'X'))
}

/// Resident memory in bytes.
pub fn rss_bytes(pid: Pid) -> Option<u64> {
    let status = procfs::process::Process::new(pid.as_raw())
        .ok()?
        .status()
        .ok()?;
    status.vmrss.map(|kb| kb * 1024)
}

/// How long the process has been running.
pub fn uptime(pid: Pid) -> Option<Duration> {
    let stat = procfs::process::Process::new(pid.as_raw())
        .ok()?
        .stat()
        .ok()?;
    let started = stat.starttime as f64 / procfs::ticks_per_second() as f64;
    let now = procfs::Uptime::current().ok()?.uptime;
    Some(Duration::from_secs_f64((now - started).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_measured_and_no_role_of_ours() {
        let me = Pid::this();
        assert!(!is_dead(me));
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(uptime(me).is_some());
        assert!(!is(me, &Role::worker("p1"), Path::new("/nope")));
        assert!(!is(me, &Role::Web, Path::new("/nope")));
        assert!(running(Path::new("/nope")).is_empty());
        assert!(group_runs(nix::unistd::getpgrp()));
    }
}

//! What /proc says about worker processes: finding orphans, liveness, uptime and memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;
use procfs::Current;

/// A process of this cm binary running `worker`.
#[derive(Debug, Clone)]
pub struct WorkerProcess {
    pub pid: Pid,
    pub name: String,
    pub config: PathBuf,
}

/// The binary a process runs; a rebuilt binary shows as "path (deleted)".
fn exe_of(proc: &procfs::process::Process) -> Option<PathBuf> {
    let exe = proc.exe().ok()?;
    let text = exe.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
    ))
}

/// Reads `cm [--config PATH] worker NAME ...` back out of an argv.
fn parse_worker_argv(argv: &[String]) -> Option<(String, PathBuf)> {
    let pos = argv.iter().position(|a| a == "worker")?;
    let name = argv.get(pos + 1)?.clone();
    let config = argv
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| argv.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix("--config=").map(PathBuf::from))
        })?;
    Some((name, config))
}

/// Reads `cm --config PATH web --detached ...` (a server `cm web --detach` or `cm server start`
/// started) back out of an argv; a foreground `cm web` in someone's terminal is not ours to stop.
fn parse_detached_web_argv(argv: &[String]) -> Option<PathBuf> {
    let mut rest = argv.iter().skip(1);
    let mut config = None;
    let mut command = None;
    while let Some(a) = rest.next() {
        if a == "--config" {
            config = rest.next().map(PathBuf::from);
        } else if let Some(c) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(c));
        } else if !a.starts_with('-') {
            command = Some(a);
            break;
        }
    }
    (command? == "web" && rest.any(|a| a == "--detached")).then_some(config?)
}

/// Every live detached web server of this binary whose argv names `config`.
pub fn web_servers_of(config: &Path) -> Vec<Pid> {
    let Ok(me) = std::env::current_exe() else {
        return Vec::new();
    };
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter(|p| exe_of(p).as_deref() == Some(me.as_path()))
        .filter(|p| {
            p.cmdline()
                .ok()
                .and_then(|argv| parse_detached_web_argv(&argv))
                .is_some_and(|c| c == config)
        })
        .map(|p| Pid::from_raw(p.pid))
        .filter(|pid| !is_dead(*pid))
        .collect()
}

/// The argv of `pid` if it runs this very binary (a rebuilt one included); else `None`.
fn our_argv(pid: Pid) -> Option<Vec<String>> {
    let proc = procfs::process::Process::new(pid.as_raw()).ok()?;
    let me = std::env::current_exe().ok()?;
    (exe_of(&proc).as_deref() == Some(me.as_path()))
        .then(|| proc.cmdline().ok())
        .flatten()
}

/// Whether `pid` is this binary's detached web server of `config` (guards every signal to it).
pub fn is_web_server(pid: Pid, config: &Path) -> bool {
    our_argv(pid)
        .and_then(|argv| parse_detached_web_argv(&argv))
        .is_some_and(|c| c == config)
}

/// Every live worker process of this binary whose argv names `config`.
pub fn workers_of(config: &Path) -> Vec<WorkerProcess> {
    let Ok(me) = std::env::current_exe() else {
        return Vec::new();
    };
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter(|p| exe_of(p).as_deref() == Some(me.as_path()))
        .filter_map(|p| {
            let (name, cfg) = parse_worker_argv(&p.cmdline().ok()?)?;
            (cfg == config && !is_dead(Pid::from_raw(p.pid))).then(|| WorkerProcess {
                pid: Pid::from_raw(p.pid),
                name,
                config: cfg,
            })
        })
        .collect()
}

/// Whether `pid` is this binary's worker `name` of `config` (guards every signal we send).
pub fn is_worker(pid: Pid, name: &str, config: &Path) -> bool {
    our_argv(pid)
        .and_then(|argv| parse_worker_argv(&argv))
        .is_some_and(|(n, c)| n == name && c == config)
}

/// Gone, or a zombie waiting to be reaped: either way it runs no more.
pub fn is_dead(pid: Pid) -> bool {
    match procfs::process::Process::new(pid.as_raw()).and_then(|p| p.stat()) {
        Ok(stat) => matches!(stat.state, 'Z' | 'X'),
        Err(_) => true,
    }
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
    fn worker_argv_is_read_back() {
        let argv: Vec<String> = [
            "/x/cm",
            "--config",
            "/etc/cm/f.toml",
            "worker",
            "p1",
            "--detached",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_worker_argv(&argv),
            Some(("p1".to_string(), PathBuf::from("/etc/cm/f.toml")))
        );
        assert_eq!(parse_worker_argv(&argv[..3]), None);
    }

    #[test]
    fn detached_web_argv_is_read_back_and_foreground_is_not() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_detached_web_argv(&argv(&[
                "/x/cm",
                "--config",
                "/etc/cm/f.toml",
                "web",
                "--detached",
                "--bind",
                "127.0.0.1:0"
            ])),
            Some(PathBuf::from("/etc/cm/f.toml"))
        );
        assert_eq!(
            parse_detached_web_argv(&argv(&["/x/cm", "--config=/a.toml", "web", "--detached"])),
            Some(PathBuf::from("/a.toml"))
        );
        assert_eq!(
            parse_detached_web_argv(&argv(&["/x/cm", "--config", "/a.toml", "web"])),
            None
        );
        assert_eq!(
            parse_detached_web_argv(&argv(&[
                "/x/cm",
                "--config",
                "/a.toml",
                "worker",
                "web",
                "--detached"
            ])),
            None
        );
    }

    #[test]
    fn this_process_is_alive_and_measured() {
        let me = Pid::this();
        assert!(!is_dead(me));
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(uptime(me).is_some());
        assert!(!is_worker(me, "p1", Path::new("/nope")));
    }
}

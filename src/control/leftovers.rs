//! What a job's command left running when its worker died without stopping it (kill -9, a
//! crash): members of the command's group, which the parent-death signal that kills the
//! command's leader does not reach. They carry the job's environment: `CM_CONFIG` names this
//! config's file and `CM_WORKER` the node that ran them, which is how they are found and how
//! nothing else is ever signalled. A worker sweeps its own node's at start (its pid lock proves
//! no other worker of that name lives); `cm server clean` sweeps every node of the config.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::kill::{self, Stoppable};
use super::procs;

/// How long a leftover gets between TERM and KILL.
const GRACE: Duration = Duration::from_secs(2);

/// Processes whose environment says a job of `config` on one of `nodes` started them.
pub fn find(config: &Path, nodes: &[String]) -> Vec<Pid> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = Pid::this();
    all.filter_map(Result::ok)
        .map(|p| Pid::from_raw(p.pid))
        .filter(|pid| *pid != me && is_leftover(*pid, config, nodes))
        .collect()
}

fn is_leftover(pid: Pid, config: &Path, nodes: &[String]) -> bool {
    let Ok(env) = procfs::process::Process::new(pid.as_raw()).and_then(|p| p.environ()) else {
        return false;
    };
    let var = |k: &str| env.get(std::ffi::OsStr::new(k));
    var("CM_JOB_ID").is_some()
        && var("CM_CONFIG").is_some_and(|c| Path::new(c) == config)
        && var("CM_WORKER").is_some_and(|w| nodes.iter().any(|n| w.as_os_str() == n.as_str()))
        && !procs::is_dead(pid)
}

#[derive(Debug)]
struct Leftover<'a> {
    pid: Pid,
    config: &'a Path,
    nodes: &'a [String],
}

impl Stoppable for Leftover<'_> {
    fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        // Proven again before every signal: once it is gone, its pid can be someone else's.
        if is_leftover(self.pid, self.config, self.nodes) {
            kill::send(self.pid, signal)
        } else {
            Ok(())
        }
    }

    fn gone(&mut self) -> bool {
        procs::is_dead(self.pid)
    }
}

/// Stops (TERM, then KILL after a grace) what jobs of `config` on `nodes` left running; the pids.
pub async fn stop(config: &Path, nodes: &[String]) -> Vec<Pid> {
    let pids = find(config, nodes);
    let targets: Vec<Leftover<'_>> = pids
        .iter()
        .map(|&pid| Leftover { pid, config, nodes })
        .collect();
    if let Err(e) = kill::stop_all(targets, Signal::SIGTERM, GRACE).await {
        tracing::warn!("stopping what jobs left running: {e:?}");
    }
    pids
}

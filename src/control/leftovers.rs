//! What a job's command left running when its worker was gone: killed (kill -9, a crash)
//! mid-job, the members of the command's group and its strays, which the parent-death signal
//! that kills the command's leader does not reach; or stopped cleanly, what a `keep_children`
//! task kept. They carry the job's environment: `CM_JOB_ID` names the job, `CM_CONFIG` this
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

/// A process a job left running: its pid and the job's id (its `CM_JOB_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub pid: Pid,
    pub job: String,
}

/// Processes whose environment says a job of `config` on one of `nodes` started them.
pub fn find(config: &Path, nodes: &[String]) -> Vec<Left> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = Pid::this();
    all.filter_map(Result::ok)
        .map(|p| Pid::from_raw(p.pid))
        .filter(|pid| *pid != me)
        .filter_map(|pid| leftover_of(pid, config, nodes).map(|job| Left { pid, job }))
        .collect()
}

/// The id of the job that left `pid`, if a job of `config` on one of `nodes` did.
fn leftover_of(pid: Pid, config: &Path, nodes: &[String]) -> Option<String> {
    let env = procfs::process::Process::new(pid.as_raw())
        .and_then(|p| p.environ())
        .ok()?;
    let var = |k: &str| env.get(std::ffi::OsStr::new(k));
    let job = var("CM_JOB_ID")?;
    (var("CM_CONFIG").is_some_and(|c| Path::new(c) == config)
        && var("CM_WORKER").is_some_and(|w| nodes.iter().any(|n| w.as_os_str() == n.as_str()))
        && !procs::is_dead(pid))
    .then(|| job.to_string_lossy().into_owned())
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
        if leftover_of(self.pid, self.config, self.nodes).is_some() {
            kill::send(self.pid, signal)
        } else {
            Ok(())
        }
    }

    fn gone(&mut self) -> bool {
        procs::is_dead(self.pid)
    }
}

/// Stops (TERM, then KILL after a grace) what jobs of `config` on `nodes` left running; what.
pub async fn stop(config: &Path, nodes: &[String]) -> Vec<Left> {
    let left = find(config, nodes);
    let targets: Vec<Leftover<'_>> = left
        .iter()
        .map(|l| Leftover {
            pid: l.pid,
            config,
            nodes,
        })
        .collect();
    if let Err(e) = kill::stop_all(targets, Signal::SIGTERM, GRACE).await {
        tracing::warn!("stopping what jobs left running: {e:?}");
    }
    left
}

/// "job ID (pids 1, 2), job ID2 (pid 3)": who left what, for a log line.
pub fn by_job(left: &[Left]) -> String {
    let mut jobs: Vec<(&str, Vec<i32>)> = Vec::new();
    for l in left {
        match jobs.iter_mut().find(|(j, _)| *j == l.job) {
            Some((_, pids)) => pids.push(l.pid.as_raw()),
            None => jobs.push((&l.job, vec![l.pid.as_raw()])),
        }
    }
    jobs.iter()
        .map(|(job, pids)| {
            let list: Vec<String> = pids.iter().map(i32::to_string).collect();
            let word = if pids.len() == 1 { "pid" } else { "pids" };
            format!("job {job} ({word} {})", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

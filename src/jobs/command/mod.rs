//! Running one job's command: no shell, its own process group tied to the worker, its output
//! line by line to whoever listens, its time limit, and a stop from outside (a revoke with
//! terminate, the worker's own shutdown).
//!
//! What it runs is already decided ([`super::argv`] made the argv); here is only the process:
//! stdin gets the job's `[args, kwargs]` as JSON, the environment the task's `env` and
//! `CM_JOB_ID`, `CM_TASK`, `CM_QUEUE`, `CM_WORKER`, `CM_CONFIG`, `CM_RESULT`. When the leader
//! exits, whatever it left behind in its group is stopped too, and so is what left the group
//! (daemonised: its strays, found by `CM_JOB_ID`) unless the task keeps it: a job leaves
//! nothing running.
//!
//! - `ended`: why it ended and what it left (`Ended`, `Ran`, the verdict).
//! - `output`: its lines: the streams, cutting long lines, the tail kept, `cm-state:` steps.
//! - `result`: the `$CM_RESULT` file.
//! - `stop`: what a stop signals: the command's group and its strays.

mod ended;
mod output;
mod result;
mod stop;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use super::cancel::{Cancel, CancelRx};
use crate::control::group;
use ended::ended_by;
pub use ended::{Ended, Ran};
use output::{next_line, valid_state, Tail, STATE_PREFIX};
pub use output::{Stream, TAIL_BYTES};
use result::read_result;
use stop::{Processes, Why};

/// Between TERM and KILL when the worker stops: its own deadline follows soon.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How often the strays under a running command are noted (see `stop::Processes::note`).
const NOTE_EVERY: Duration = Duration::from_secs(1);
/// How long the outputs may stay quiet once nothing cm stops can write to them.
const DRAIN: Duration = Duration::from_millis(200);

/// How a command is to be run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `CM_JOB_ID`, which every process the command starts inherits: how its strays are known.
    pub job_id: String,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The task's own variables, then cm's (which win).
    pub env: Vec<(String, String)>,
    /// The job's `[args, kwargs]`, written to stdin.
    pub stdin: String,
    /// Where the command may write its JSON result (`$CM_RESULT`).
    pub result_file: PathBuf,
    pub time_limit: Option<Duration>,
    /// Between TERM and KILL, for a time limit, a terminate or a shutdown.
    pub kill_grace: Duration,
    /// Leave running what the command leaves when it exits (`keep_children`).
    pub keep_children: bool,
}

/// Runs `inv`; `line` hears every output line (a `cm-state: NAME` line too), `state` every
/// step NAME announced. `cancel` ends it early. An error: the command could not be started.
pub async fn run(
    inv: &Invocation,
    mut line: impl FnMut(Stream, &str),
    mut state: impl FnMut(&str),
    mut cancel: CancelRx,
) -> std::io::Result<Ran> {
    let Some((program, args)) = inv.argv.split_first() else {
        return Err(std::io::Error::other("empty command"));
    };
    let _ = std::fs::remove_file(&inv.result_file);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .env("CM_JOB_ID", &inv.job_id)
        .env("CM_RESULT", &inv.result_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &inv.cwd {
        cmd.current_dir(dir);
    }
    let mut procs = Processes::new(group::spawn_tied(&mut cmd)?, &inv.job_id, inv.keep_children);
    let leader = procs.leader();
    let (stdin, stdout, stderr) = (
        leader.stdin.take(),
        leader.stdout.take(),
        leader.stderr.take(),
    );
    if let Some(mut stdin) = stdin {
        let input = inv.stdin.clone().into_bytes();
        // A command that never reads its stdin must not hold up the job.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let mut out = stdout.map(BufReader::new);
    let mut err = stderr.map(BufReader::new);
    let (mut out_line, mut err_line) = (Vec::new(), Vec::new());
    let mut tail = Tail::default();
    let mut last_stderr = None;
    let deadline = inv.time_limit.map(|t| Instant::now() + t);
    let mut exit: Option<ExitStatus> = None;
    // Why cm is stopping it, and when the KILL follows the first signal.
    let mut stopping: Option<(Why, Instant)> = None;
    let mut killed = false;
    // Once nothing cm stops holds the outputs (a kept stray may), they are read until they have
    // been quiet this long: what the command wrote before it exited is never cut off.
    let mut drain: Option<Instant> = None;
    let mut next_note = (!inv.keep_children).then(|| Instant::now() + NOTE_EVERY);
    let mut emit = |stream: Stream, bytes: &[u8], tail: &mut Tail| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        tail.push(stream, text);
        if stream == Stream::Err && !text.trim().is_empty() {
            last_stderr = Some(text.to_string());
        }
        line(stream, text);
        if let Some(name) = text.strip_prefix(STATE_PREFIX).map(str::trim) {
            if valid_state(name) {
                state(name);
            }
        }
    };
    loop {
        if exit.is_some() && out.is_none() && err.is_none() {
            break;
        }
        let kill_at = stopping.as_ref().map(|(_, at)| *at);
        tokio::select! {
            read = next_line(out.as_mut(), &mut out_line), if out.is_some() => {
                if read? { emit(Stream::Out, &out_line, &mut tail) } else { out = None }
                out_line.clear();
                drain = drain.map(|_| Instant::now() + DRAIN);
            }
            read = next_line(err.as_mut(), &mut err_line), if err.is_some() => {
                if read? { emit(Stream::Err, &err_line, &mut tail) } else { err = None }
                err_line.clear();
                drain = drain.map(|_| Instant::now() + DRAIN);
            }
            status = procs.wait(), if exit.is_none() => {
                exit = Some(status?);
                if out.is_some() || err.is_some() {
                    if stopping.is_none() && procs.runs() {
                        // What it left behind may hold the pipes open: it goes too.
                        procs.signal(Signal::SIGTERM)?;
                        stopping = Some((Why::LeftBehind, Instant::now() + inv.kill_grace));
                    } else if stopping.is_none() || killed {
                        drain = Some(Instant::now() + DRAIN);
                    }
                }
            }
            () = sleep_until(deadline), if stopping.is_none() && exit.is_none() && deadline.is_some() => {
                procs.signal(Signal::SIGTERM)?;
                stopping = Some((Why::TimeLimit, Instant::now() + inv.kill_grace));
            }
            asked = cancel.asked(), if stopping.is_none() && exit.is_none() => {
                let (signal, why, grace) = match asked {
                    Cancel::Terminate(sig) => (sig, Why::Terminate(sig), inv.kill_grace),
                    // The worker's own deadline is near: no time for a long grace.
                    Cancel::Shutdown => (Signal::SIGTERM, Why::Shutdown, inv.kill_grace.min(SHUTDOWN_GRACE)),
                };
                procs.signal(signal)?;
                stopping = Some((why, Instant::now() + grace));
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                procs.signal(Signal::SIGKILL)?;
                killed = true;
                if let Some((_, at)) = stopping.as_mut() {
                    *at = far_future();
                }
                if exit.is_some() {
                    drain = Some(Instant::now() + DRAIN);
                }
            }
            () = sleep_until(drain), if drain.is_some() => break,
            () = sleep_until(next_note), if next_note.is_some() && exit.is_none() => {
                procs.note();
                next_note = Some(Instant::now() + NOTE_EVERY);
            }
        }
    }
    // A member that closed its outputs may still run: the group ends with its job, and so do
    // its strays, unless the task keeps what its command leaves.
    let stopped = matches!(
        stopping,
        Some((Why::TimeLimit | Why::Terminate(_) | Why::Shutdown, _))
    );
    procs.stop(Signal::SIGTERM, inv.kill_grace, stopped).await;
    let status = exit.unwrap_or_default();
    let ended = match stopping.map(|(why, _)| why) {
        Some(Why::TimeLimit) => Ended::TimeLimit(inv.time_limit.unwrap_or_default()),
        Some(Why::Terminate(sig)) => Ended::Terminated(sig),
        Some(Why::Shutdown) => Ended::Shutdown,
        Some(Why::LeftBehind) | None => ended_by(status),
    };
    let result = read_result(&inv.result_file);
    let _ = std::fs::remove_file(&inv.result_file);
    Ok(Ran {
        ended,
        result,
        tail: tail.text(),
        last_stderr,
    })
}

/// Never, as an instant `sleep_until` can wait for.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

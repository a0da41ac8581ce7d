//! Running one job's command: no shell, its own process group tied to the worker, its output
//! line by line to whoever listens, its time limit, and a stop from outside (a revoke with
//! terminate, the worker's own shutdown).
//!
//! What it runs is already decided ([`super::argv`] made the argv); here is only the process:
//! stdin gets the job's `[args, kwargs]` as JSON, the environment the task's `env` and
//! `CM_JOB_ID`, `CM_TASK`, `CM_QUEUE`, `CM_WORKER`, `CM_CONFIG`, `CM_RESULT`. When the leader
//! exits, whatever it left behind in its group is stopped too: a job leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use super::cancel::{Cancel, CancelRx};
use crate::control::group::{self, ProcessGroup};

/// A longer line is cut into pieces of this size: output cannot grow a line without end.
const MAX_LINE: usize = 16 * 1024;
/// How much of a job's output stays with it in the store.
pub const TAIL_BYTES: usize = 64 * 1024;
/// The most a `$CM_RESULT` file may hold.
const MAX_RESULT: u64 = 1024 * 1024;
/// Between TERM and KILL when the worker stops: its own deadline follows soon.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// What prints this on a line of its own records step NAME in the job's history.
const STATE_PREFIX: &str = "cm-state: ";

/// Which of the command's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn label(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// How a command is to be run.
#[derive(Debug, Clone)]
pub struct Invocation {
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
}

/// Why the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal nobody here sent.
    Signalled(i32),
    TimeLimit(Duration),
    Terminated(Signal),
    Shutdown,
}

/// What a finished command leaves.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ended: Ended,
    /// The JSON text of `$CM_RESULT` (normalised), if the command wrote one.
    pub result: Option<Result<String, String>>,
    /// The last [`TAIL_BYTES`] of its output, both streams in the order read.
    pub tail: String,
    pub last_stderr: Option<String>,
}

impl Ran {
    /// The job's result as JSON text, or why it failed (`None`: stopped by a revoke or by the
    /// worker's shutdown, which the caller settles).
    pub fn verdict(&self) -> Option<Result<String, String>> {
        let said = || {
            self.last_stderr
                .as_deref()
                .map_or(String::new(), |l| format!(": {l}"))
        };
        match &self.ended {
            Ended::Exited(0) => Some(match &self.result {
                None => Ok("null".into()),
                Some(r) => r.clone(),
            }),
            Ended::Exited(code) => Some(Err(format!("exit status {code}{}", said()))),
            Ended::Signalled(sig) => {
                Some(Err(format!("killed by {}{}", signal_name(*sig), said())))
            }
            Ended::TimeLimit(limit) => Some(Err(format!(
                "time limit {} s exceeded",
                limit.as_secs_f64()
            ))),
            Ended::Terminated(_) | Ended::Shutdown => None,
        }
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
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
        .env("CM_RESULT", &inv.result_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &inv.cwd {
        cmd.current_dir(dir);
    }
    let mut group = group::spawn_tied(&mut cmd)?;
    let leader = group.leader();
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
            }
            read = next_line(err.as_mut(), &mut err_line), if err.is_some() => {
                if read? { emit(Stream::Err, &err_line, &mut tail) } else { err = None }
                err_line.clear();
            }
            status = group.wait(), if exit.is_none() => {
                exit = Some(status?);
                // What it left behind may hold the pipes open: it goes too.
                if stopping.is_none() && (out.is_some() || err.is_some()) && !group.is_gone() {
                    stop_group(&mut group, Signal::SIGTERM)?;
                    stopping = Some((Why::LeftBehind, Instant::now() + inv.kill_grace));
                }
            }
            () = sleep_until(deadline), if stopping.is_none() && exit.is_none() && deadline.is_some() => {
                stop_group(&mut group, Signal::SIGTERM)?;
                stopping = Some((Why::TimeLimit, Instant::now() + inv.kill_grace));
            }
            asked = cancel.asked(), if stopping.is_none() && exit.is_none() => {
                let (signal, why, grace) = match asked {
                    Cancel::Terminate(sig) => (sig, Why::Terminate(sig), inv.kill_grace),
                    // The worker's own deadline is near: no time for a long grace.
                    Cancel::Shutdown => (Signal::SIGTERM, Why::Shutdown, inv.kill_grace.min(SHUTDOWN_GRACE)),
                };
                stop_group(&mut group, signal)?;
                stopping = Some((why, Instant::now() + grace));
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                stop_group(&mut group, Signal::SIGKILL)?;
                if let Some((_, at)) = stopping.as_mut() {
                    *at = far_future();
                }
            }
        }
    }
    // A member that closed its outputs may still run: the group ends with its job.
    if !group.is_gone() {
        let _ = group.stop(Signal::SIGTERM, inv.kill_grace).await;
    }
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

/// Why cm signals a command's group.
#[derive(Debug, Clone, Copy)]
enum Why {
    TimeLimit,
    Terminate(Signal),
    Shutdown,
    /// The leader exited; members it left behind go with it.
    LeftBehind,
}

fn ended_by(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(sig)) => Ended::Signalled(sig),
        (None, None) => Ended::Exited(-1),
    }
}

fn stop_group(group: &mut ProcessGroup, signal: Signal) -> std::io::Result<()> {
    group
        .signal(signal)
        .map(|_| ())
        .map_err(|e| std::io::Error::other(format!("signalling the command's group: {e}")))
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

/// Reads the next line (without its newline, at most [`MAX_LINE`] bytes) into `buf`; false at
/// the end of the stream (a last line without a newline is still a line).
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Some(reader) = reader else {
        return std::future::pending().await;
    };
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let room = MAX_LINE - buf.len();
        match memchr::memchr(b'\n', &available[..available.len().min(room)]) {
            Some(i) => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                return Ok(true);
            }
            None => {
                let take = available.len().min(room);
                buf.extend_from_slice(&available[..take]);
                reader.consume(take);
                if buf.len() >= MAX_LINE {
                    return Ok(true);
                }
            }
        }
    }
}

/// A step a command may name: short, plain, and not one of cm's own states (a step named
/// SUCCESS would read as the job's end before it ends).
fn valid_state(name: &str) -> bool {
    !name.is_empty()
        && !crate::store::is_cm_state(name)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The JSON in the result file, normalised; `None` when the command wrote none.
fn read_result(path: &Path) -> Option<Result<String, String>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RESULT {
        return Some(Err(format!(
            "$CM_RESULT holds {} bytes, more than the {MAX_RESULT} a result may",
            meta.len()
        )));
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => return Some(Err(format!("reading $CM_RESULT: {e}"))),
    };
    Some(
        serde_json::from_slice::<serde_json::Value>(&text)
            .map(|v| v.to_string())
            .map_err(|e| format!("$CM_RESULT is not JSON: {e}")),
    )
}

/// The last [`TAIL_BYTES`] of a command's output, whole lines, `err:` marking stderr's.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, stream: Stream, text: &str) {
        let line = match stream {
            Stream::Out => text.to_string(),
            Stream::Err => format!("err: {text}"),
        };
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > TAIL_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    fn inv(dir: &Path, argv: &[&str]) -> Invocation {
        Invocation {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: vec![("CM_JOB_ID".into(), "j1".into())],
            stdin: r#"[["a"], {"k": 1}]"#.into(),
            result_file: dir.join("result.json"),
            time_limit: None,
            kill_grace: Duration::from_millis(300),
        }
    }

    /// Runs `inv` with nobody cancelling; the lines heard and the steps announced.
    fn go(inv: &Invocation, cancel: Option<(Duration, Cancel)>) -> (Ran, Vec<String>, Vec<String>) {
        runtime().block_on(async {
            let stops = crate::jobs::cancel::Stops::default();
            let rx = stops.for_job("j1".into());
            if let Some((after, what)) = cancel {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    match what {
                        Cancel::Terminate(sig) => stops.terminate("j1", sig),
                        Cancel::Shutdown => stops.shutdown(),
                    }
                });
            }
            let (mut lines, mut states) = (Vec::new(), Vec::new());
            let ran = run(
                inv,
                |s, l| lines.push(format!("{}: {l}", s.label())),
                |n| states.push(n.to_string()),
                rx,
            )
            .await
            .expect("the command starts");
            (ran, lines, states)
        })
    }

    #[test]
    fn output_states_stdin_env_and_result_reach_the_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = r#"echo "got $(cat) as $CM_JOB_ID"; echo oops >&2; echo 'cm-state: deploy'; echo '{"ok": [1, 2]}' > "$CM_RESULT""#;
        let (ran, lines, states) = go(&inv(dir.path(), &["/bin/sh", "-c", script]), None);
        assert_eq!(ran.ended, Ended::Exited(0));
        assert!(
            lines.contains(&r#"out: got [["a"], {"k": 1}] as j1"#.to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"err: oops".to_string()), "{lines:?}");
        assert_eq!(states, ["deploy"]);
        assert_eq!(ran.verdict(), Some(Ok(r#"{"ok":[1,2]}"#.to_string())));
        assert!(ran.tail.contains("err: oops\n"), "{}", ran.tail);
        assert!(
            !dir.path().join("result.json").exists(),
            "the result file is cleaned up"
        );
    }

    #[test]
    fn an_argument_holding_shell_syntax_is_printed_not_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let value = "$(touch pwned); `touch pwned` && touch pwned | x > pwned";
        let mut i = inv(dir.path(), &["/bin/echo", value]);
        i.cwd = Some(dir.path().to_path_buf());
        let (ran, lines, _) = go(&i, None);
        assert_eq!(ran.ended, Ended::Exited(0));
        assert_eq!(lines, [format!("out: {value}")]);
        assert!(!dir.path().join("pwned").exists());
    }

    #[test]
    fn a_non_zero_exit_fails_naming_the_status_and_the_last_stderr_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ran, _, _) = go(
            &inv(
                dir.path(),
                &[
                    "/bin/sh",
                    "-c",
                    "echo first >&2; echo 'disk full' >&2; exit 3",
                ],
            ),
            None,
        );
        assert_eq!(ran.ended, Ended::Exited(3));
        assert_eq!(ran.verdict(), Some(Err("exit status 3: disk full".into())));
    }

    #[test]
    fn a_time_limit_stops_the_whole_group_and_fails_naming_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 30 & echo $! > {}; trap '' TERM; sleep 30",
            pids.display()
        );
        let mut i = inv(dir.path(), &["/bin/sh", "-c", &script]);
        i.time_limit = Some(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let (ran, _, _) = go(&i, None);
        assert_eq!(ran.ended, Ended::TimeLimit(Duration::from_millis(300)));
        assert_eq!(ran.verdict(), Some(Err("time limit 0.3 s exceeded".into())));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let member: i32 = std::fs::read_to_string(&pids)
            .expect("the member's pid")
            .trim()
            .parse()
            .expect("a pid");
        assert!(crate::control::procs::is_dead(nix::unistd::Pid::from_raw(
            member
        )));
    }

    #[test]
    fn a_terminate_ends_it_with_its_signal_and_no_verdict() {
        let dir = tempfile::tempdir().expect("temp dir");
        let i = inv(dir.path(), &["/bin/sleep", "30"]);
        let (ran, _, _) = go(
            &i,
            Some((
                Duration::from_millis(100),
                Cancel::Terminate(Signal::SIGINT),
            )),
        );
        assert_eq!(ran.ended, Ended::Terminated(Signal::SIGINT));
        assert_eq!(ran.verdict(), None);
    }

    #[test]
    fn what_the_leader_leaves_behind_goes_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        let script = format!("sleep 30 & echo $! > {}; echo done", pids.display());
        let (ran, lines, _) = go(&inv(dir.path(), &["/bin/sh", "-c", &script]), None);
        assert_eq!(ran.ended, Ended::Exited(0));
        assert_eq!(lines, ["out: done"]);
        let member: i32 = std::fs::read_to_string(&pids)
            .expect("the member's pid")
            .trim()
            .parse()
            .expect("a pid");
        assert!(crate::control::procs::is_dead(nix::unistd::Pid::from_raw(
            member
        )));
    }

    #[test]
    fn a_result_that_is_not_json_fails_the_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ran, _, _) = go(
            &inv(
                dir.path(),
                &["/bin/sh", "-c", "echo 'not json' > \"$CM_RESULT\""],
            ),
            None,
        );
        assert!(
            matches!(ran.verdict(), Some(Err(why)) if why.starts_with("$CM_RESULT is not JSON")),
            "{:?}",
            ran.verdict()
        );
    }

    #[test]
    fn long_lines_are_cut_and_the_tail_keeps_the_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; seq 1 20000";
        let (ran, lines, _) = go(&inv(dir.path(), &["/bin/sh", "-c", script]), None);
        assert_eq!(ran.ended, Ended::Exited(0));
        assert!(
            lines[0].len() <= MAX_LINE + 5 && lines[1].starts_with("out: x"),
            "{}",
            lines[0].len()
        );
        assert!(ran.tail.len() <= TAIL_BYTES, "{}", ran.tail.len());
        assert!(ran.tail.ends_with("19999\n20000\n"));
    }
}

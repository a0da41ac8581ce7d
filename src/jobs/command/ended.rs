//! Why a command ended and what it left: its exit, the result it wrote, its output's tail, and
//! the job's verdict from those.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;

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
    /// The last [`TAIL_BYTES`](super::TAIL_BYTES) of its output, both streams in the order read.
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

pub(super) fn ended_by(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(sig)) => Ended::Signalled(sig),
        (None, None) => Ended::Exited(-1),
    }
}

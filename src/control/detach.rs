//! The detached child's half of a start (the parent's is `spawn.rs`): a session of its own, so an
//! operator's Ctrl-C or closed terminal never reaches it, and its readiness pipe. The parent
//! hands over the pipe as stdout and the log as stderr; the child keeps the pipe aside, points
//! stdout at the log (whatever a job prints lands there), and later writes one line on the pipe:
//! its ready line, or `error <code>: <why>`, which `spawn.rs` reads back.

use std::fs::File;
use std::io::Write;

use crate::exit::code_for;

/// The write end of the readiness pipe; one line, then it is closed.
#[derive(Debug)]
pub struct ReadyPipe {
    pipe: File,
}

impl ReadyPipe {
    /// A worker's ready line: its consumer is registered on the broker.
    pub const READY: &'static str = "ready";

    /// In the detached child, first thing: its own session, the pipe taken from stdout, stdout
    /// pointed at the log.
    pub fn take() -> std::io::Result<Self> {
        // Fails only for a process group leader, which a freshly spawned child is not.
        let _ = nix::unistd::setsid();
        let pipe = nix::unistd::dup(std::io::stdout())?;
        nix::unistd::dup2_stdout(std::io::stderr())?;
        Ok(Self {
            pipe: File::from(pipe),
        })
    }

    /// Writes `line` and closes the pipe: the starter waits for nothing more.
    pub fn say(mut self, line: &str) {
        // The starter may have given up already; that is its business, not an error here.
        let _ = writeln!(self.pipe, "{line}");
    }

    /// `error <exit code>: <why>`: the starter reports `why` and exits with the code.
    pub fn fail(self, e: &anyhow::Error) {
        self.say(&format!("error {}: {e:#}", code_for(e) as u8));
    }
}

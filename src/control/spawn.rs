//! Starting a detached worker: directories, log redirection, the readiness pipe.
//!
//! The child is `cm --config PATH worker NAME --detached`; its stdout is a pipe back to us on
//! which it writes `ready` once its consumer is registered, or `error <code>: <why>`.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{AccessFlags, Pid};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

use crate::config::{Config, WorkerRef};
use crate::exit::{CmError, Code};

/// A worker that has been spawned and has not yet said whether it is consuming.
#[derive(Debug)]
pub struct Starting {
    pub name: String,
    pub queue: String,
    pub pid: Pid,
    child: Child,
    ready: BufReader<ChildStdout>,
}

/// Why a worker did not become ready, with the exit code it maps to.
#[derive(Debug, Clone)]
pub struct NotReady {
    pub code: Code,
    pub reason: String,
}

/// Creates `dir` if needed and checks we can write there; the error says what to do.
pub fn ensure_writable_dir(dir: &Path, what: &str, key: &str) -> Result<(), CmError> {
    let fail = |source: std::io::Error| {
        CmError::Permission {
        message: format!(
            "cannot write {what} {}: {source} (run with sudo, or set [paths] {key} to a directory you can write)",
            dir.display()
        ),
    }
    };
    // Created 0755 (not whatever the umask allows): others may read the pid files, not plant them.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(fail)?;
    nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .map_err(|e| fail(std::io::Error::from(e)))?;
    // Anyone who can write here could plant a pid file or a symlink where cm looks.
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(CmError::Permission {
            message: format!(
                "{what} {} is writable by others (mode {:o}): run `chmod o-w {}`, or set [paths] {key} to a directory of cm's own",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ),
        });
    }
    Ok(())
}

/// Opens (creating) a log file for appending, never through a symlink; the error says what to do.
pub fn open_log(path: &Path) -> Result<std::fs::File, CmError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| CmError::Permission {
            message: format!(
                "cannot open log file {}: {e} (run with sudo, or set [paths] log_dir)",
                path.display()
            ),
        })
}

/// This very binary, re-executed for detached workers and the detached web server.
pub fn cm_binary() -> Result<std::path::PathBuf, CmError> {
    std::env::current_exe().map_err(|e| CmError::Other(format!("cannot find the cm binary: {e}")))
}

pub fn spawn(cfg: &Config, worker: WorkerRef<'_>) -> Result<Starting, CmError> {
    let log = open_log(&cfg.log_file(worker.name))?;
    let exe = cm_binary()?;
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(&cfg.path)
        .arg("worker")
        .arg(worker.name)
        .arg("--detached")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| CmError::Other(format!("cannot spawn worker {}: {e}", worker.name)))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| CmError::Other(format!("worker {} exited at once", worker.name)))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CmError::Other("worker stdout was not piped".into()))?;
    Ok(Starting {
        name: worker.name.to_string(),
        queue: worker.queue.name.clone(),
        pid,
        child,
        ready: BufReader::new(stdout),
    })
}

impl Starting {
    /// Waits for the worker's `ready` line; on a deadline miss the caller stops the worker.
    pub async fn wait_ready(&mut self, deadline: Instant, log: &Path) -> Result<(), NotReady> {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, self.ready.read_line(&mut line)).await;
        let line = line.trim();
        match read {
            Err(_) => Err(NotReady {
                code: Code::TempFail,
                reason: format!("not consuming by the start deadline; see {}", log.display()),
            }),
            Ok(Ok(_)) if line == "ready" => Ok(()),
            Ok(Ok(_)) if line.starts_with("error") => Err(parse_error_line(line)),
            Ok(_) => {
                let status =
                    tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait())
                        .await;
                let how = match status {
                    Ok(Ok(s)) => format!("exited ({s})"),
                    _ => "closed its readiness pipe".to_string(),
                };
                Err(NotReady {
                    code: Code::Failure,
                    reason: format!(
                        "{how} before it was consuming; last log line: {}",
                        last_line(log).unwrap_or_else(|| "(empty)".into())
                    ),
                })
            }
        }
    }
}

impl Starting {
    /// After a failed start: give the worker a moment to exit by itself, then kill it, and reap
    /// it, so no half-started worker outlives `cm queue start`.
    pub async fn reap(&mut self) {
        let exited =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
        if exited.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// `error 69: no broker at ...` → code 69 and the text.
fn parse_error_line(line: &str) -> NotReady {
    let rest = line.trim_start_matches("error").trim_start();
    let (code, reason) = match rest.split_once(": ") {
        Some((n, why)) => (n.parse().ok(), why),
        None => (None, rest),
    };
    NotReady {
        code: code.map_or(Code::Failure, Code::from_raw),
        reason: reason.to_string(),
    }
}

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_carry_their_exit_code() {
        let e = parse_error_line("error 69: no broker at amqp://x");
        assert_eq!(e.code, Code::Unavailable);
        assert_eq!(e.reason, "no broker at amqp://x");
        let e = parse_error_line("error: something");
        assert_eq!(e.code, Code::Failure);
    }
}

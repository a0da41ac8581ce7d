//! Starting a detached process (the parent's half; the child's is `detach.rs`): its folders
//! and log, then `cm --config PATH <role's args> [extra]` with stdin from /dev/null, stdout a
//! pipe back to us and stderr its log, and the wait for its one readiness line.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{AccessFlags, Pid};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

use super::role::Role;
use crate::config::Config;
use crate::exit::{CmError, Code};

/// A process that has been spawned and has not yet said whether it is ready.
#[derive(Debug)]
pub struct Starting {
    pub role: Role,
    pub pid: Pid,
    child: Child,
    ready: BufReader<ChildStdout>,
}

/// Why a process did not say it is ready.
#[derive(Debug, Clone)]
pub enum NotReady {
    /// Said nothing by the start deadline.
    Deadline,
    /// Said `error <code>: <why>`.
    Refused { code: Code, why: String },
    /// Closed the pipe without a ready line: `how` is "exited (<status>)" or
    /// "closed its readiness pipe".
    Ended { how: String },
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

/// Spawns `role` detached, with `extra` arguments after its own.
pub fn spawn(cfg: &Config, role: &Role, extra: &[&str]) -> Result<Starting, CmError> {
    let log = open_log(&role.log_file(cfg))?;
    let mut child = Command::new(cm_binary()?)
        .arg("--config")
        .arg(&cfg.path)
        .args(role.detached_args())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| CmError::Other(format!("cannot spawn {}: {e}", role.noun())))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| CmError::Other(format!("{} exited at once", role.noun())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CmError::Other(format!("{}: stdout was not piped", role.noun())))?;
    Ok(Starting {
        role: role.clone(),
        pid,
        child,
        ready: BufReader::new(stdout),
    })
}

impl Starting {
    /// Waits for the first line and returns it if `is_ready` says it is the ready line. On any
    /// error the caller [`reap`](Self::reap)s the process.
    pub async fn wait_ready(
        &mut self,
        deadline: Instant,
        is_ready: impl Fn(&str) -> bool,
    ) -> Result<String, NotReady> {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, self.ready.read_line(&mut line)).await;
        let line = line.trim();
        match read {
            Err(_) => Err(NotReady::Deadline),
            Ok(Ok(_)) if is_ready(line) => Ok(line.to_string()),
            Ok(Ok(_)) if line.starts_with("error") => Err(parse_error_line(line)),
            Ok(_) => {
                let status =
                    tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait())
                        .await;
                let how = match status {
                    Ok(Ok(s)) => format!("exited ({s})"),
                    _ => "closed its readiness pipe".to_string(),
                };
                Err(NotReady::Ended { how })
            }
        }
    }

    /// After a failed start: give the process a moment to exit by itself, then kill it, and
    /// reap it, so nothing half-started outlives the command that started it.
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
    let (code, why) = match rest.split_once(": ") {
        Some((n, why)) => (n.parse().ok(), why),
        None => (None, rest),
    };
    NotReady::Refused {
        code: code.map_or(Code::Failure, Code::from_raw),
        why: why.to_string(),
    }
}

/// The last non-empty line of a log, for a start that failed without saying why.
pub(super) fn last_line(path: &Path) -> Option<String> {
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
        let refused = |line| match parse_error_line(line) {
            NotReady::Refused { code, why } => (code, why),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused("error 69: no broker at amqp://x"),
            (Code::Unavailable, "no broker at amqp://x".to_string())
        );
        assert_eq!(refused("error: something").0, Code::Failure);
    }
}

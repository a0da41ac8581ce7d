//! The local RabbitMQ node through its own tools (`rabbitmq-server`, `rabbitmqctl`), with a
//! deadline on every call: a down node can keep `rabbitmqctl` waiting for a long time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Where Debian puts the tools; `sudo` and cron often leave /usr/sbin off PATH.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/lib/rabbitmq/bin"];

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{tool} not found (looked in $PATH and {}): install RabbitMQ with `apt-get install rabbitmq-server` (or `make up`)", EXTRA_DIRS.join(", "))]
    Missing { tool: &'static str },
    #[error("`{command}` gave no answer within {}s", .after.as_secs())]
    Timeout { command: String, after: Duration },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("running `{command}`: {cause}")]
    Io {
        command: String,
        cause: std::io::Error,
    },
}

/// The first executable `name` on PATH or in the usual sbin folders.
pub fn find_tool(name: &'static str) -> Result<PathBuf, CtlError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or(CtlError::Missing { tool: name })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `rabbitmqctl`, found once.
pub struct Ctl {
    path: PathBuf,
}

impl Ctl {
    pub fn find() -> Result<Self, CtlError> {
        Ok(Self {
            path: find_tool("rabbitmqctl")?,
        })
    }

    /// Runs `rabbitmqctl ARGS` (with `stdin` fed to it, e.g. a password kept out of `ps`) and
    /// returns its stdout; non-zero exit or no answer by `timeout` is an error.
    pub async fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<String, CtlError> {
        run_tool(&self.path, "rabbitmqctl", args, stdin, timeout).await
    }

    /// Whether the local node answers `rabbitmqctl status` within 15 s.
    pub async fn node_answers(&self) -> bool {
        self.run(&["status"], None, Duration::from_secs(15))
            .await
            .is_ok()
    }

    /// `rabbitmqctl -q LIST_CMD ... --formatter json`, parsed.
    pub async fn list<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
    ) -> Result<Vec<T>, CtlError> {
        let mut full = vec!["-q"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--formatter", "json"]);
        let text = self.run(&full, None, Duration::from_secs(30)).await?;
        // An empty listing is printed as nothing at all by some versions.
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|e| CtlError::Failed {
            command: format!("rabbitmqctl {}", full.join(" ")),
            status: "unreadable output".into(),
            output: format!("{e}: {}", first_line(&text)),
        })
    }
}

/// Runs a tool in its own process group, so a timeout kills it and whatever it started.
pub async fn run_tool(
    path: &Path,
    shown: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, CtlError> {
    let command = format!("{shown} {}", args.join(" "));
    let io = |cause| CtlError::Io {
        command: command.clone(),
        cause,
    };
    let mut child = tokio::process::Command::new(path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(io)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(format!("{text}\n").as_bytes())
            .await
            .map_err(io)?;
    }
    let pgid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(result) => result.map_err(io)?,
        Err(_) => {
            if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(CtlError::Timeout {
                command,
                after: timeout,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Error:" && !l.ends_with("..."))
        .collect();
    Err(CtlError::Failed {
        command,
        status: output
            .status
            .code()
            .map_or_else(|| "killed".into(), |c| format!("exit {c}")),
        output: said.join(" / "),
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Whether `host` (from a broker URL) names this machine, where `rabbitmqctl` speaks for it.
pub fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host == "::1" || host.starts_with("127.") {
        return true;
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_local() {
        assert!(is_local_host("127.0.0.1"));
        assert!(is_local_host("localhost"));
        assert!(is_local_host("[::1]"));
        assert!(!is_local_host("10.1.2.3"));
        assert!(!is_local_host("broker.example.org"));
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_reported() {
        let sh = Path::new("/bin/sh");
        let err = run_tool(
            sh,
            "sh",
            &["-c", "echo 'Error:' >&2; echo nope >&2; exit 3"],
            None,
            Duration::from_secs(5),
        )
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "`sh -c echo 'Error:' >&2; echo nope >&2; exit 3` failed (exit 3): nope"
        );
        let err = run_tool(
            sh,
            "sh",
            &["-c", "sleep 30"],
            None,
            Duration::from_millis(200),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert!(matches!(err, CtlError::Timeout { .. }), "{err}");
        let out = run_tool(
            sh,
            "sh",
            &["-c", "read x; echo got $x"],
            Some("pw"),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string());
        assert_eq!(out.as_deref(), Ok("got pw\n"));
    }
}

//! Celery's own side, from bench/.venv (scripts/ensure-celery-venv.sh, which `make test` runs):
//! its tools, and Python clients of the test broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

use super::broker::broker_url;
use super::procs::Killed;

/// A program of the venv (`python`, `celery`), which must be there.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/.venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: `make test` installs Celery and Flower (scripts/ensure-celery-venv.sh)",
        path.display()
    );
    path
}

/// kombu's spelling of the test broker (it writes the vhost `/` as `%2F` or `//`).
pub fn kombu_url() -> String {
    broker_url().replace("%2f", "%2F")
}

/// A script that makes `app`, a Celery client of the test broker whose results come back over
/// rpc://, then runs `body`.
pub fn client_with_results(body: &str) -> String {
    client_app("backend=\"rpc://\"", body)
}

/// A script that makes `app`, a Celery client of the test broker that asks for no results,
/// then runs `body`.
pub fn client(body: &str) -> String {
    client_app("", body)
}

fn client_app(backend: &str, body: &str) -> String {
    format!(
        "from celery import Celery\n\
         app = Celery(\"client\", broker={broker:?}, {backend})\n\
         app.conf.broker_connection_retry_on_startup = False\n\
         {body}",
        broker = kombu_url(),
    )
}

/// Runs `python -c SCRIPT ARGS` with the venv's Python, which must succeed: its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts `python -c SCRIPT ARGS` and leaves it running: it, and its stdout line by line.
pub fn spawn_python(script: &str, args: &[&str]) -> (Killed, Receiver<String>) {
    let mut child = Killed::spawn(
        Command::new(venv_bin("python"))
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped()),
    );
    let lines = child.lines();
    (child, lines)
}

/// `celery -b URL control ARGS --json -d NODE -t 10`, which must succeed: the node's reply.
pub fn control(node: &str, args: &[&str]) -> serde_json::Value {
    remote("control", node, args)
}

/// `celery -b URL inspect ARGS --json -d NODE -t 10`, which must succeed: the node's reply.
pub fn inspect(node: &str, args: &[&str]) -> serde_json::Value {
    remote("inspect", node, args)
}

fn remote(command: &str, node: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(venv_bin("celery"))
        .arg("-b")
        .arg(kombu_url())
        .arg(command)
        .args(args)
        .args(["--json", "-d", node, "-t", "10"])
        .output()
        .expect("run celery");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery {command} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("celery {command} {args:?} printed no JSON ({e}):\n{stdout}"));
    // `control --json` prints a list of replies, `inspect --json` one object of them.
    (replies.as_array())
        .and_then(|l| l.iter().find_map(|r| r.get(node)))
        .or_else(|| replies.get(node))
        .cloned()
        .unwrap_or_else(|| panic!("celery {command} {args:?}: no reply from {node}:\n{stdout}"))
}

//! The message options a Celery client sends (issue 16), end to end: a real Celery 5 client
//! (bench/.venv) sends `countdown`, `expires` and `time_limit` to real `cm worker`s over the
//! real broker; the commands they run leave their marks in a temp dir, and the store (read
//! through `cm jobs show --json`) says each job's fate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, Options, Stack};

/// A queue (two workers, `c1` and `c2`, so that their schedulers race) with the tasks:
/// `t.stamp` appends the time (s since the epoch) to `{dir}/ran`; `t.sleep` sleeps 30 s.
struct Celery {
    stack: Stack,
    dir: tempfile::TempDir,
    queue: String,
    /// Dropped after the stack: the PostgreSQL store's database, if the stack uses one.
    _pg: Option<common::PgDatabase>,
}

impl Celery {
    fn new() -> Self {
        Self::on(None, "")
    }

    /// With its status store in a PostgreSQL database of its own.
    fn on_postgres() -> Self {
        Self::on(Some(common::PgDatabase::new()), "")
    }

    /// `worker_keys`: more `[worker]` keys.
    fn on(pg: Option<common::PgDatabase>, worker_keys: &str) -> Self {
        let queue = common::unique("t_opts");
        let dir = tempfile::tempdir().expect("temp dir");
        let ran = dir.path().join("ran");
        let extra = format!(
            r#"[queues.{queue}]
workers = ["c1", "c2"]
tasks = ["t.stamp", "t.sleep"]
concurrency = 2
[tasks."t.stamp"]
command = ["/bin/sh", "-c", "date +%s.%N >> {ran}"]
[tasks."t.sleep"]
command = ["/bin/sleep", "30"]
kill_grace = 1
"#,
            ran = ran.display()
        );
        let stack = Stack::with(Options {
            extra,
            store_url: pg.as_ref().map(|db| db.url.clone()),
            worker_extra: format!("allow_root = true\n{worker_keys}"),
            ..Options::default()
        });
        stack.delete_on_drop(&queue);
        Self {
            stack,
            dir,
            queue,
            _pg: pg,
        }
    }

    /// The times the stamp command ran at, in order.
    fn runs(&self) -> Vec<f64> {
        std::fs::read_to_string(self.dir.path().join("ran"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn start(&self) {
        self.stack.ok(&["queue", "start", "c1", "c2"]);
    }

    fn stop(&self) {
        self.stack.ok(&["queue", "stop", "c1", "c2"]);
    }

    /// Runs a Celery client that sends one task (`call`: the `send_task` arguments after the
    /// name) and prints `<id> <time before sending>`; returns both.
    fn send(&self, task: &str, call: &str) -> (String, f64) {
        let out = python(&format!(
            r#"
import time
from datetime import datetime, timedelta, timezone
from celery import Celery
app = Celery("client", broker="{broker}".replace("%2f", "%2F"))
app.conf.broker_connection_retry_on_startup = False
sent = time.time()
r = app.send_task("{task}", queue="{queue}"{call})
print(r.id, sent)
"#,
            broker = common::broker_url(),
            queue = self.queue,
        ));
        let mut words = out.split_whitespace();
        let id = words.next().expect("an id").to_string();
        let sent = words.next().and_then(|w| w.parse().ok()).expect("a time");
        (id, sent)
    }

    /// `cm jobs show ID --json`.
    fn show(&self, id: &str) -> serde_json::Value {
        let out = self.stack.cm(&["jobs", "show", id, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn state(&self, id: &str) -> String {
        self.show(id)["state"].as_str().unwrap_or("").to_string()
    }

    fn history(&self, id: &str) -> Vec<String> {
        self.show(id)["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|e| e["state"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn python_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.venv/bin/python")
}

/// Runs `script` with the Celery venv's Python; its stdout, after it succeeded.
fn python(script: &str) -> String {
    let python = python_path();
    assert!(python.exists(), "{} missing", python.display());
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "celery client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn a_countdown_job_is_scheduled_then_runs_once_no_earlier_than_its_eta() {
    let c = Celery::new();
    c.start();
    let (id, sent) = c.send("t.stamp", ", countdown=3");
    eventually(Duration::from_secs(2), "the job SCHEDULED", || {
        c.state(&id) == "SCHEDULED"
    });
    let row = c.show(&id);
    let eta = row["eta_ms"].as_i64().expect("an eta") as f64 / 1000.0;
    assert!((eta - (sent + 3.0)).abs() < 1.0, "eta {eta}, sent {sent}");
    // Still held while its eta is ahead: polled until a moment before it.
    while now_s() < sent + 2.7 {
        assert_eq!(c.state(&id), "SCHEDULED");
        assert!(c.runs().is_empty(), "ran before its eta");
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually(Duration::from_secs(15), "the job SUCCESS", || {
        c.state(&id) == "SUCCESS"
    });
    let runs = c.runs();
    assert_eq!(runs.len(), 1, "ran {runs:?}");
    assert!(runs[0] >= sent + 3.0, "ran at {}, sent at {sent}", runs[0]);
    // REQUEUED is noted once the broker confirmed the publish: the run it starts may be
    // recorded first.
    let history = c.history(&id);
    assert_eq!(
        history.first().map(String::as_str),
        Some("SCHEDULED"),
        "{history:?}"
    );
    for state in ["REQUEUED", "RECEIVED", "STARTED", "SUCCESS"] {
        assert!(history.iter().any(|h| h == state), "{history:?}");
    }
    c.stop();
}

#[test]
fn a_scheduled_job_survives_a_restart_of_the_workers_and_runs_once_after_its_eta() {
    survives_a_restart(&Celery::new());
}

#[test]
fn on_postgres_a_scheduled_job_survives_a_restart_of_the_workers_and_runs_once_after_its_eta() {
    let c = Celery::on_postgres();
    survives_a_restart(&c);
    assert!(
        !c.stack.store_file().exists(),
        "used SQLite, not PostgreSQL"
    );
}

/// Stops every worker while a countdown job is SCHEDULED, lets its eta pass, starts them again.
fn survives_a_restart(c: &Celery) {
    c.start();
    let (id, sent) = c.send("t.stamp", ", countdown=3");
    eventually(Duration::from_secs(2), "the job SCHEDULED", || {
        c.state(&id) == "SCHEDULED"
    });
    c.stop();
    // Its eta passes with no worker: nothing runs it, the store keeps it.
    while now_s() < sent + 4.0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.state(&id), "SCHEDULED");
    assert!(c.runs().is_empty());
    assert_eq!(common::queue_depth(&c.queue), 0, "the broker holds it");
    c.start();
    eventually(Duration::from_secs(15), "the job SUCCESS", || {
        c.state(&id) == "SUCCESS"
    });
    // Give a second run the chance to show.
    std::thread::sleep(Duration::from_secs(2));
    let runs = c.runs();
    assert_eq!(runs.len(), 1, "ran {runs:?}");
    assert!(runs[0] >= sent + 4.0, "ran at {}, sent at {sent}", runs[0]);
    c.stop();
}

#[test]
fn a_job_past_its_expiry_is_revoked_unrun_also_when_it_comes_due_expired() {
    let c = Celery::new();
    c.start();
    let (late, _) = c.send(
        "t.stamp",
        ", expires=datetime.now(timezone.utc) - timedelta(seconds=5)",
    );
    // Received before its expiry, due after it.
    let (due_late, _) = c.send("t.stamp", ", countdown=2, expires=1");
    eventually(Duration::from_secs(15), "both jobs REVOKED", || {
        c.state(&late) == "REVOKED" && c.state(&due_late) == "REVOKED"
    });
    for id in [&late, &due_late] {
        let row = c.show(id);
        let error = row["error"].as_str().unwrap_or("");
        assert!(error.starts_with("expired at 20"), "{row}");
    }
    assert!(c.history(&due_late).contains(&"SCHEDULED".to_string()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.runs().is_empty(), "an expired job ran: {:?}", c.runs());
    c.stop();
}

#[test]
fn a_messages_time_limit_fails_a_long_command() {
    let c = Celery::new();
    c.start();
    let started = Instant::now();
    let (hard, _) = c.send("t.sleep", ", time_limit=1");
    let (soft, _) = c.send("t.sleep", ", soft_time_limit=1");
    eventually(Duration::from_secs(20), "both jobs FAILURE", || {
        c.state(&hard) == "FAILURE" && c.state(&soft) == "FAILURE"
    });
    assert!(started.elapsed() < Duration::from_secs(20));
    for id in [&hard, &soft] {
        let row = c.show(id);
        assert_eq!(
            row["error"].as_str(),
            Some("time limit 1 s exceeded"),
            "{row}"
        );
    }
    c.stop();
}

#[test]
fn a_revoked_scheduled_job_never_runs() {
    let c = Celery::new();
    c.start();
    let (id, sent) = c.send("t.stamp", ", countdown=3");
    eventually(Duration::from_secs(2), "the job SCHEDULED", || {
        c.state(&id) == "SCHEDULED"
    });
    let said = c.stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("REVOKED"), "{said}");
    assert_eq!(c.state(&id), "REVOKED");
    while now_s() < sent + 5.0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.state(&id), "REVOKED");
    assert!(c.runs().is_empty(), "the revoked job ran");
    c.stop();
}

/// The store keeps a scheduled job's reply address: published again when due, its result
/// still reaches the client waiting on `get()` over rpc://.
#[test]
fn a_countdown_jobs_client_gets_its_result_over_rpc() {
    let c = Celery::new();
    c.start();
    let out = python(&format!(
        r#"
from celery import Celery
app = Celery("client", broker="{broker}".replace("%2f", "%2F"), backend="rpc://")
app.conf.broker_connection_retry_on_startup = False
r = app.send_task("t.stamp", queue="{queue}", countdown=1)
print(r.id)
print("result", r.get(timeout=20))
"#,
        broker = common::broker_url(),
        queue = c.queue,
    ));
    let mut lines = out.lines();
    let id = lines.next().unwrap_or_default();
    assert_eq!(lines.next(), Some("result None"), "{out}");
    assert_eq!(c.state(id), "SUCCESS");
    assert!(c.history(id).contains(&"SCHEDULED".to_string()));
    assert_eq!(c.runs().len(), 1);
    c.stop();
}

/// A scheduler that claimed a due job and died before publishing it: its claim is a lease, it
/// lapses, and a lease reaper of a live worker publishes the job, which runs once.
#[test]
fn a_due_job_whose_claimer_died_is_published_by_a_lease_reaper() {
    let c = Celery::on(None, "lease_seconds = 3");
    c.start();
    c.stop();
    let (id, sent) = c.send("t.stamp", ", countdown=1");
    // No worker runs: the message waits on the broker. One takes it and schedules it...
    c.stack.ok(&["queue", "start", "c1"]);
    eventually(Duration::from_secs(5), "the job SCHEDULED", || {
        c.state(&id) == "SCHEDULED"
    });
    c.stack.ok(&["queue", "stop", "c1"]);
    // ...and once it is due, a scheduler "dies" holding its claim (made here, through the
    // store's API, as a scheduler makes it).
    while now_s() < sent + 1.2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let store_url = cm::config::StoreLocation::SqliteFile(c.stack.store_file());
    let claimed = common::runtime().block_on(async {
        let store = cm::store::Store::open(&store_url).await?;
        let now = cm::store::now_ms();
        let rows = store
            .claim_due(&c.queue, "dead@nowhere", now, now + 1_000, 10)
            .await?;
        store.close().await;
        Ok::<_, cm::store::StoreError>(rows)
    });
    let claimed = claimed.expect("the store");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("dead@nowhere"));
    c.start();
    eventually(Duration::from_secs(20), "the job SUCCESS", || {
        c.state(&id) == "SUCCESS"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.runs().len(), 1, "ran {:?}", c.runs());
    let row = c.show(&id);
    let lapsed = row["history"].as_array().into_iter().flatten().any(|e| {
        e["state"] == "REQUEUED"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the lease of dead@nowhere lapsed"))
    });
    assert!(lapsed, "{row}");
    c.stop();
}

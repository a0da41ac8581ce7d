//! The message options a Celery client sends (issue 16), end to end: a real Celery 5 client
//! (bench/.venv) sends `countdown`, `expires` and `time_limit` to real `cm worker`s over the
//! real broker; the commands they run leave their marks in a temp dir, and the store (read
//! through `cm jobs show --json`) says each job's fate.

mod common;

use std::time::{Duration, Instant};

use common::celery::{client, client_with_results, python};
use common::*;

/// The tasks of the queue: `t.stamp` appends the time (s since the epoch) to `{dir}/ran`;
/// `t.sleep` sleeps 30 s.
const TASKS: &str = r#"[tasks."t.stamp"]
command = ["/bin/sh", "-c", "date +%s.%N >> {dir}/ran"]
[tasks."t.sleep"]
command = ["/bin/sleep", "30"]
kill_grace = 1
"#;

/// A stack whose own queue takes [`TASKS`], with two workers, `c1` and `c2`, so that their
/// schedulers race; its store on `store_url` (SQLite by default), more `[worker]` keys.
fn options_stack(store_url: Option<String>, worker_keys: &str) -> Stack {
    Stack::with(Options {
        store_url,
        worker_keys: worker_keys.into(),
        own_queue: Some(OwnQueue {
            workers: &["c1", "c2"],
            ..OwnQueue::commands(TASKS)
        }),
        ..Options::default()
    })
}

/// The times the stamp command ran at, in order.
fn runs(stack: &Stack) -> Vec<f64> {
    std::fs::read_to_string(stack.file("ran"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A Celery client sends one task (`options`: the `send_task` arguments after the name) to the
/// stack's own queue: its id, and the time just before it was sent.
fn send(stack: &Stack, task: &str, options: &str) -> (String, f64) {
    let out = python(
        &client(&format!(
            r#"
import sys, time
from datetime import datetime, timedelta, timezone
sent = time.time()
r = app.send_task({task:?}, queue=sys.argv[1]{options})
print(r.id, sent)
"#
        )),
        &[stack.queue()],
    );
    let mut words = out.split_whitespace();
    let id = words.next().expect("an id").to_string();
    let sent = words.next().and_then(|w| w.parse().ok()).expect("a time");
    (id, sent)
}

fn state(stack: &Stack, id: &str) -> String {
    stack.show(id)["state"].as_str().unwrap_or("").to_string()
}

/// Waits (up to `seconds`) for job `id` to be in `wanted`.
fn reaches(stack: &Stack, id: &str, wanted: &str, seconds: u64) {
    eventually(
        Duration::from_secs(seconds),
        &format!("job {id} {wanted}"),
        || state(stack, id) == wanted,
    );
}

const WORKERS_C: [&str; 2] = ["c1", "c2"];

#[test]
fn a_countdown_job_is_scheduled_then_runs_once_no_earlier_than_its_eta() {
    let stack = options_stack(None, "");
    stack.start(&WORKERS_C);
    let (id, sent) = send(&stack, "t.stamp", ", countdown=3");
    reaches(&stack, &id, "SCHEDULED", 2);
    let eta = stack.show(&id)["eta_ms"].as_i64().expect("an eta") as f64 / 1000.0;
    assert!((eta - (sent + 3.0)).abs() < 1.0, "eta {eta}, sent {sent}");
    // Still held while its eta is ahead: polled until a moment before it.
    while now_s() < sent + 2.7 {
        assert_eq!(state(&stack, &id), "SCHEDULED");
        assert!(runs(&stack).is_empty(), "ran before its eta");
        std::thread::sleep(Duration::from_millis(200));
    }
    reaches(&stack, &id, "SUCCESS", 15);
    let ran = runs(&stack);
    assert_eq!(ran.len(), 1, "ran {ran:?}");
    assert!(ran[0] >= sent + 3.0, "ran at {}, sent at {sent}", ran[0]);
    // REQUEUED is noted once the broker confirmed the publish: the run it starts may be
    // recorded first.
    let history = stack.history(&id);
    assert_eq!(
        history.first().map(String::as_str),
        Some("SCHEDULED"),
        "{history:?}"
    );
    for state in ["REQUEUED", "RECEIVED", "STARTED", "SUCCESS"] {
        assert!(history.iter().any(|h| h == state), "{history:?}");
    }
    stack.stop(&WORKERS_C);
}

#[test]
fn a_scheduled_job_survives_a_restart_of_the_workers_and_runs_once_after_its_eta() {
    survives_a_restart(&options_stack(None, ""));
}

#[test]
fn on_postgres_a_scheduled_job_survives_a_restart_of_the_workers_and_runs_once_after_its_eta() {
    let db = PgDatabase::new();
    let stack = options_stack(Some(db.url.clone()), "");
    survives_a_restart(&stack);
    assert!(!stack.store_file().exists(), "used SQLite, not PostgreSQL");
}

/// Stops every worker while a countdown job is SCHEDULED, lets its eta pass, starts them again.
fn survives_a_restart(stack: &Stack) {
    stack.start(&WORKERS_C);
    let (id, sent) = send(stack, "t.stamp", ", countdown=3");
    reaches(stack, &id, "SCHEDULED", 2);
    stack.stop(&WORKERS_C);
    // Its eta passes with no worker: nothing runs it, the store keeps it.
    sleep_until_s(sent + 4.0);
    assert_eq!(state(stack, &id), "SCHEDULED");
    assert!(runs(stack).is_empty());
    assert_eq!(queue_depth(stack.queue()), 0, "the broker holds it");
    stack.start(&WORKERS_C);
    reaches(stack, &id, "SUCCESS", 15);
    // Give a second run the chance to show.
    std::thread::sleep(Duration::from_secs(2));
    let ran = runs(stack);
    assert_eq!(ran.len(), 1, "ran {ran:?}");
    assert!(ran[0] >= sent + 4.0, "ran at {}, sent at {sent}", ran[0]);
    stack.stop(&WORKERS_C);
}

#[test]
fn a_job_past_its_expiry_is_revoked_unrun_also_when_it_comes_due_expired() {
    let stack = options_stack(None, "");
    stack.start(&WORKERS_C);
    let (late, _) = send(
        &stack,
        "t.stamp",
        ", expires=datetime.now(timezone.utc) - timedelta(seconds=5)",
    );
    // Received before its expiry, due after it.
    let (due_late, _) = send(&stack, "t.stamp", ", countdown=2, expires=1");
    eventually(Duration::from_secs(15), "both jobs REVOKED", || {
        state(&stack, &late) == "REVOKED" && state(&stack, &due_late) == "REVOKED"
    });
    for id in [&late, &due_late] {
        let row = stack.show(id);
        let error = row["error"].as_str().unwrap_or("");
        assert!(error.starts_with("expired at 20"), "{row}");
    }
    assert!(stack.history(&due_late).contains(&"SCHEDULED".to_string()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        runs(&stack).is_empty(),
        "an expired job ran: {:?}",
        runs(&stack)
    );
    stack.stop(&WORKERS_C);
}

#[test]
fn a_messages_time_limit_fails_a_long_command() {
    let stack = options_stack(None, "");
    stack.start(&WORKERS_C);
    let started = Instant::now();
    let (hard, _) = send(&stack, "t.sleep", ", time_limit=1");
    let (soft, _) = send(&stack, "t.sleep", ", soft_time_limit=1");
    eventually(Duration::from_secs(20), "both jobs FAILURE", || {
        state(&stack, &hard) == "FAILURE" && state(&stack, &soft) == "FAILURE"
    });
    assert!(started.elapsed() < Duration::from_secs(20));
    for id in [&hard, &soft] {
        let row = stack.show(id);
        assert_eq!(
            row["error"].as_str(),
            Some("time limit 1 s exceeded"),
            "{row}"
        );
    }
    stack.stop(&WORKERS_C);
}

#[test]
fn a_revoked_scheduled_job_never_runs() {
    let stack = options_stack(None, "");
    stack.start(&WORKERS_C);
    let (id, sent) = send(&stack, "t.stamp", ", countdown=3");
    reaches(&stack, &id, "SCHEDULED", 2);
    let said = stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("REVOKED"), "{said}");
    assert_eq!(state(&stack, &id), "REVOKED");
    sleep_until_s(sent + 5.0);
    assert_eq!(state(&stack, &id), "REVOKED");
    assert!(runs(&stack).is_empty(), "the revoked job ran");
    stack.stop(&WORKERS_C);
}

/// The store keeps a scheduled job's reply address: published again when due, its result
/// still reaches the client waiting on `get()` over rpc://.
#[test]
fn a_countdown_jobs_client_gets_its_result_over_rpc() {
    let stack = options_stack(None, "");
    stack.start(&WORKERS_C);
    let out = python(
        &client_with_results(
            r#"
import sys
r = app.send_task("t.stamp", queue=sys.argv[1], countdown=1)
print(r.id)
print("result", r.get(timeout=20))
"#,
        ),
        &[stack.queue()],
    );
    let mut lines = out.lines();
    let id = lines.next().unwrap_or_default();
    assert_eq!(lines.next(), Some("result None"), "{out}");
    assert_eq!(state(&stack, id), "SUCCESS");
    assert!(stack.history(id).contains(&"SCHEDULED".to_string()));
    assert_eq!(runs(&stack).len(), 1);
    stack.stop(&WORKERS_C);
}

/// A scheduler that claimed a due job and died before publishing it: its claim is a lease, it
/// lapses, and a lease reaper of a live worker publishes the job, which runs once.
#[test]
fn a_due_job_whose_claimer_died_is_published_by_a_lease_reaper() {
    let stack = options_stack(None, "lease_seconds = 3");
    stack.start(&WORKERS_C);
    stack.stop(&WORKERS_C);
    let (id, sent) = send(&stack, "t.stamp", ", countdown=1");
    // No worker runs: the message waits on the broker. One takes it and schedules it...
    stack.start(&["c1"]);
    reaches(&stack, &id, "SCHEDULED", 5);
    stack.stop(&["c1"]);
    // ...and once it is due, a scheduler "dies" holding its claim (made here, through the
    // store's API, as a scheduler makes it).
    sleep_until_s(sent + 1.2);
    let store_url = cm::config::StoreLocation::SqliteFile(stack.store_file());
    let claimed = runtime().block_on(async {
        let store = cm::store::Store::open(&store_url).await?;
        let now = cm::store::now_ms();
        let rows = store
            .claim_due(stack.queue(), "dead@nowhere", now, now + 1_000, 10)
            .await?;
        store.close().await;
        Ok::<_, cm::store::StoreError>(rows)
    });
    let claimed = claimed.expect("the store");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("dead@nowhere"));
    stack.start(&WORKERS_C);
    reaches(&stack, &id, "SUCCESS", 20);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&stack).len(), 1, "ran {:?}", runs(&stack));
    let row = stack.show(&id);
    let lapsed = row["history"].as_array().into_iter().flatten().any(|e| {
        e["state"] == "REQUEUED"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the lease of dead@nowhere lapsed"))
    });
    assert!(lapsed, "{row}");
    stack.stop(&WORKERS_C);
}

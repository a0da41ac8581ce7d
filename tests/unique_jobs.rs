//! Unique jobs (issue 31) on real workers, the real broker and both stores: `[tasks."NAME"]
//! unique` makes one job of many publishes of a key, from one host or two at once; the key
//! frees when its window ends (`queued`: the job started; `unfinished`: it ended); a Celery
//! client's duplicate is acked unrun and its rpc:// reply names the holder.

mod common;

use std::time::Duration;

use common::celery::{client_with_results, python};
use common::*;

/// Two tasks of one key each, `{host}`: their command waits until the file `go-<host>` is in
/// the stack's files, then ends.
const TASKS: &str = r#"[tasks."t.queued"]
command = ["/bin/sh", "-c", "while [ ! -e \"$2/go-$1\" ]; do sleep 0.05; done", "sh", "{host}", "{dir}"]
params = ["host"]
unique = "{host}"
unique_while = "queued"

[tasks."t.unfinished"]
command = ["/bin/sh", "-c", "while [ ! -e \"$2/go-$1\" ]; do sleep 0.05; done", "sh", "{host}", "{dir}"]
params = ["host"]
unique = "{host}"
unique_while = "unfinished"
"#;

fn stack_with(options: Options) -> Stack {
    Stack::with(Options {
        own_queue: Some(OwnQueue::commands(TASKS)),
        ..options
    })
}

/// `n` publishes of `task` for `host`, half through `one`, half through `two`, all at once:
/// each exits 0 and prints one id; (the ids, how many said "already queued as").
fn publish_at_once(
    one: &Stack,
    two: &Stack,
    n: usize,
    task: &str,
    host: &str,
) -> (Vec<String>, usize) {
    let args = serde_json::json!([host]).to_string();
    let running: Vec<_> = (0..n)
        .map(|i| {
            let stack = if i % 2 == 0 { one } else { two };
            stack.call(task).args(&args).background()
        })
        .collect();
    let mut ids = Vec::new();
    let mut told = 0;
    for r in running {
        let ran = r.finish();
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{ran:?}");
        ids.push(lines[0].to_string());
        if ran.stderr.contains("already queued as") {
            told += 1;
        }
    }
    (ids, told)
}

/// The jobs of `task` in the store.
fn jobs_of(stack: &Stack, task: &str) -> Vec<serde_json::Value> {
    stack
        .jobs()
        .into_iter()
        .filter(|j| j["task"] == task)
        .collect()
}

/// 20 publishes make one job; every publisher printed its id; 19 were told so.
fn assert_one_job(stack: &Stack, ids: &[String], told: usize, task: &str) {
    let jobs = jobs_of(stack, task);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_str().expect("id");
    assert!(ids.iter().all(|i| i == id), "{ids:?} vs {id}");
    assert_eq!(told, ids.len() - 1, "{ids:?}");
}

fn go(stack: &Stack, host: &str) {
    std::fs::write(stack.file(&format!("go-{host}")), "").expect("write the go file");
}

fn state(stack: &Stack, id: &str) -> String {
    stack.job(id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn twenty_publishes_of_a_key_make_one_job_and_the_key_frees_when_its_window_ends() {
    let stack = stack_with(Options::default());
    // No worker yet: every job stays queued.
    let (ids, told) = publish_at_once(&stack, &stack, 20, "t.queued", "h1");
    assert_one_job(&stack, &ids, told, "t.queued");
    let (ids, told) = publish_at_once(&stack, &stack, 20, "t.unfinished", "h1");
    assert_one_job(&stack, &ids, told, "t.unfinished");
    let (queued, unfinished) = (
        jobs_of(&stack, "t.queued")[0]["id"]
            .as_str()
            .expect("id")
            .to_string(),
        jobs_of(&stack, "t.unfinished")[0]["id"]
            .as_str()
            .expect("id")
            .to_string(),
    );

    // Both start, and wait for their go file.
    stack.start(&["c1"]);
    eventually(Duration::from_secs(30), "both jobs to start", || {
        state(&stack, &queued) == "STARTED" && state(&stack, &unfinished) == "STARTED"
    });
    let args = r#"["h1"]"#;
    // `queued`: started, its key is free: a new job.
    let second = stack.call("t.queued").args(args).id();
    assert_ne!(second, queued);
    // `unfinished`: running still holds it.
    let again = stack.call("t.unfinished").args(args).run();
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(again.stdout.trim(), unfinished);
    assert!(
        again
            .stderr
            .contains(&format!("already queued as {unfinished}")),
        "{again:?}"
    );
    // Its end frees it.
    go(&stack, "h1");
    eventually(Duration::from_secs(30), "the jobs to end", || {
        state(&stack, &unfinished) == "SUCCESS" && state(&stack, &second) == "SUCCESS"
    });
    let third = stack.call("t.unfinished").args(args).id();
    assert_ne!(third, unfinished);
    // Another key is another job.
    let other = stack.call("t.unfinished").args(r#"["h2"]"#).id();
    assert_ne!(other, third);
    stack.server_stop();
}

#[test]
fn two_hosts_sharing_postgresql_publishing_one_key_at_once_make_one_job() {
    let db = PgDatabase::new();
    let a = stack_with(Options {
        store_url: Some(db.url.clone()),
        node_host: Some("host-a".into()),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    let (ids, told) = publish_at_once(&a, &b, 20, "t.unfinished", "h1");
    assert_one_job(&a, &ids, told, "t.unfinished");
    let (ids, told) = publish_at_once(&a, &b, 20, "t.queued", "h1");
    assert_one_job(&b, &ids, told, "t.queued");
    // The broker holds one message of each.
    a.start(&["c1"]);
    go(&a, "h1");
    eventually(Duration::from_secs(30), "both to succeed", || {
        a.jobs().iter().filter(|j| j["state"] == "SUCCESS").count() == 2
    });
    a.server_stop();
}

#[test]
fn a_celery_clients_duplicate_is_acked_unrun_and_its_reply_names_the_holder() {
    let stack = stack_with(Options::default());
    stack.start(&["c1"]);
    let out = python(
        &client_with_results(
            r#"
import sys, time
first = app.send_task("t.unfinished", args=["h7"], queue=sys.argv[1])
print(first.id)
# The first is received (its key taken) before the second is sent.
time.sleep(1.5)
second = app.send_task("t.unfinished", args=["h7"], queue=sys.argv[1])
print(second.id)
try:
    second.get(timeout=30)
    print("no error")
except Exception as e:
    print("error", type(e).__name__, e)
"#,
        ),
        &[stack.queue()],
    );
    let lines: Vec<&str> = out.lines().collect();
    let (first, second) = (lines[0], lines[1]);
    assert!(
        lines[2].starts_with("error TaskRevokedError")
            && lines[2].contains(&format!("already queued as {first}")),
        "{out}"
    );
    let dup = stack.job(second);
    assert_eq!(dup["state"], "REVOKED", "{dup}");
    assert!(
        dup["error"].as_str().unwrap_or_default().contains(first),
        "{dup}"
    );
    // Never run: no STARTED in its history, and the holder still runs.
    assert!(!stack.history(second).iter().any(|s| s == "STARTED"));
    assert_eq!(state(&stack, first), "STARTED");
    go(&stack, "h7");
    eventually(Duration::from_secs(30), "the holder to succeed", || {
        state(&stack, first) == "SUCCESS"
    });
    stack.server_stop();
}

#[test]
fn the_api_answers_a_held_key_with_the_holders_id_and_a_flag() {
    use axum::http::StatusCode;
    use common::web::App;
    use serde_json::json;

    let stack = Stack::with(Options {
        extra: "[recipes.Once]\ndescription = \"once per host\"\ncommand = [\"/bin/true\"]\nunique = \"{recipe}:{host}\"\n".into(),
        ..Options::default()
    });
    let app = App::new(&stack);
    let launch = json!({"server": "india_openstack_essex", "recipe": "Once", "hosts": "i1"});
    let (status, first) = app.post_json("/api/launch", &launch);
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["already_queued"], json!([false]), "{first}");
    // No worker runs it: the key is held, and the same launch answers with its id.
    let (status, again) = app.post_json("/api/launch", &launch);
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["ids"], first["ids"], "{again}");
    assert_eq!(again["already_queued"], json!([true]), "{again}");
    assert_eq!(
        stack
            .jobs()
            .iter()
            .filter(|j| j["recipe"] == "Once")
            .count(),
        1
    );
}

/// Publishes of a held key `--after` a parent make no second job: the key is taken in the
/// transaction that stores the WAITING job, as for a job due now; a WAITING holder keeps it.
fn after_a_parent_a_held_key_makes_no_second_job(stack: &Stack) {
    let args = r#"["h9"]"#;
    let parent = stack.call("t.unfinished").args(r#"["p"]"#).id();
    let first = stack
        .call("t.queued")
        .args(args)
        .set("--after", &parent)
        .id();
    assert_eq!(state(stack, &first), "WAITING");
    let again = stack
        .call("t.queued")
        .args(args)
        .set("--after", &parent)
        .run();
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(again.stdout.trim(), first, "{again:?}");
    assert!(
        again.stderr.contains(&format!("already queued as {first}")),
        "{again:?}"
    );
    // A job due now meets the WAITING holder's key too.
    let now = stack.call("t.queued").args(args).run();
    assert_eq!(now.stdout.trim(), first, "{now:?}");
    assert_eq!(jobs_of(stack, "t.queued").len(), 1);
    // Released and run, the key frees (`queued`: once it started).
    stack.start(&["c1"]);
    go(stack, "p");
    go(stack, "h9");
    eventually(Duration::from_secs(30), "the waiting job to run", || {
        state(stack, &first) == "SUCCESS"
    });
    let next = stack
        .call("t.queued")
        .args(args)
        .set("--after", &parent)
        .id();
    assert_ne!(next, first);
    stack.server_stop();
}

#[test]
fn after_a_parent_a_held_key_makes_no_second_job_on_sqlite() {
    after_a_parent_a_held_key_makes_no_second_job(&stack_with(Options::default()));
}

#[test]
fn after_a_parent_a_held_key_makes_no_second_job_on_postgresql() {
    let db = PgDatabase::new();
    after_a_parent_a_held_key_makes_no_second_job(&stack_with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    }));
}

/// `cm jobs retry` of a job whose task is unique takes the key for the new run, in the retry's
/// transaction: refused, naming the holder, while another job holds it; taken otherwise.
#[test]
fn a_retry_takes_the_unique_key_or_is_refused_naming_its_holder() {
    let stack = stack_with(Options::default());
    let args = r#"["h5"]"#;
    // No worker: a revoke ends a queued job at once, and frees its key.
    let first = stack.call("t.unfinished").args(args).id();
    stack.ok(&["jobs", "revoke", &first]);
    assert_eq!(state(&stack, &first), "REVOKED");
    let holder = stack.call("t.unfinished").args(args).id();
    assert_ne!(holder, first);
    let refused = stack.cm(&["jobs", "retry", &first]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("held by job {holder}")),
        "{refused:?}"
    );
    assert_eq!(jobs_of(&stack, "t.unfinished").len(), 2);
    // The holder gone, the retry runs and holds the key: a publish finds it queued.
    stack.ok(&["jobs", "revoke", &holder]);
    let retried = stack.ok(&["jobs", "retry", &first]);
    let new_id = retried
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(state(&stack, &new_id), "PENDING", "{retried}");
    let again = stack.call("t.unfinished").args(args).run();
    assert_eq!(again.stdout.trim(), new_id, "{again:?}");
}

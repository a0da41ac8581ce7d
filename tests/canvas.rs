//! Celery's canvas from a real Celery 5 client (bench/.venv, rpc:// results) on real cm workers
//! over the real broker (issue 29): chains pass each result on, a failed step fails the rest
//! of its chain at once, errbacks run with the failed id, a group's members report, a worker
//! killed after its commit still has the next step published (once), and a job whose worker
//! died mid-job is published again as it came, so that `.get()` still gets its result.

mod common;

use std::time::{Duration, Instant};

use common::celery::{client_with_results, python, spawn_python};
use common::*;

/// `t.add x y` returns x + y; `t.fail` fails; `t.note id` appends its argument to
/// `{dir}/notes` and returns null; `t.slow x` sleeps 4 s, then returns x.
const TASKS: &str = r#"[tasks."t.add"]
command = ["/bin/sh", "-c", "echo $(($1 + $2)) > \"$CM_RESULT\"", "sh", "{x}", "{y}"]
params = ["x", "y"]
[tasks."t.fail"]
command = ["/bin/sh", "-c", "echo failing; exit 3"]
[tasks."t.note"]
command = ["/bin/sh", "-c", "echo \"$1\" >> {dir}/notes", "sh", "{id}"]
params = ["id"]
[tasks."t.slow"]
command = ["/bin/sh", "-c", "echo $CM_WORKER >> {dir}/slow; sleep 4; echo \"$1\" > \"$CM_RESULT\"", "sh", "{x}"]
params = ["x"]
"#;

/// A stack whose own queue takes [`TASKS`], workers `c1` and `c2`; its store on `store_url`
/// (SQLite by default), more `[worker]` keys.
fn canvas_stack(store_url: Option<String>, worker_keys: &str) -> Stack {
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

/// Runs a Celery client script (`q` is the stack's queue, `sig(name, *args)` a signature on
/// no queue, routed by cm's task table): its stdout's lines.
fn client(stack: &Stack, body: &str) -> Vec<String> {
    let script = client_with_results(&format!(
        "import sys, time\nfrom celery import chain, group\nq = sys.argv[1]\n\
         def sig(name, *args, **options):\n    return app.signature(name, args=args, **options)\n\
         {body}"
    ));
    python(&script, &[stack.queue()])
        .lines()
        .map(str::to_string)
        .collect()
}

fn state(stack: &Stack, id: &str) -> String {
    stack.show(id)["state"].as_str().unwrap_or("").to_string()
}

#[test]
fn a_chain_passes_each_result_on_and_get_returns_the_last_steps() {
    chain_of_three(&canvas_stack(None, ""));
}

#[test]
fn on_postgres_a_chain_passes_each_result_on_and_get_returns_the_last_steps() {
    let db = PgDatabase::new();
    let stack = canvas_stack(Some(db.url.clone()), "");
    chain_of_three(&stack);
    assert!(!stack.store_file().exists(), "used SQLite, not PostgreSQL");
}

/// (1 + 2) + 10, then + 100: the first step on the stack's queue by name, the others routed by
/// cm's task table; each step's row says its parent and root.
fn chain_of_three(stack: &Stack) {
    stack.start(&["c1"]);
    let out = client(
        stack,
        r#"
r = chain(sig("t.add", 1, 2, queue=q), sig("t.add", 10), sig("t.add", 100)).apply_async()
print(r.parent.parent.id, r.parent.id, r.id)
print(r.get(timeout=30))
"#,
    );
    let ids: Vec<&str> = out[0].split_whitespace().collect();
    assert_eq!(out[1], "113", "{out:?}");
    let (first, second, third) = (ids[0], ids[1], ids[2]);
    let last = stack.show(third);
    assert_eq!(last["state"], "SUCCESS", "{last}");
    assert_eq!(last["args"], "[[13,100],{}]", "{last}");
    assert_eq!(last["parent_id"], second, "{last}");
    assert_eq!(last["root_id"], first, "{last}");
    let middle = stack.show(second);
    assert_eq!(middle["parent_id"], first, "{middle}");
    assert_eq!(middle["deliveries"], 1, "{middle}");
    // The tree follows the canvas from any of its jobs, each step under the one before.
    let tree = stack.ok(&["jobs", "tree", second]);
    let depth = |id: &str| {
        let line = tree.lines().find(|l| l.contains(id)).expect("in the tree");
        line.len() - line.trim_start().len()
    };
    assert!(
        depth(first) < depth(second) && depth(second) < depth(third),
        "{tree}"
    );
    assert!(tree.contains("canvas"), "{tree}");
    stack.stop(&["c1"]);
}

#[test]
fn a_chain_whose_first_step_fails_raises_in_get_within_seconds_and_never_runs_the_rest() {
    failing_chain(&canvas_stack(None, ""));
}

#[test]
fn on_postgres_a_chain_whose_first_step_fails_raises_in_get_and_never_runs_the_rest() {
    let db = PgDatabase::new();
    let stack = canvas_stack(Some(db.url.clone()), "");
    failing_chain(&stack);
    assert!(!stack.store_file().exists(), "used SQLite, not PostgreSQL");
}

/// A chain whose first step fails: the rest end FAILURE unrun, and `.get()` raises at once.
fn failing_chain(stack: &Stack) {
    stack.start(&["c1"]);
    let started = Instant::now();
    let out = client(
        stack,
        r#"
r = chain(sig("t.fail", queue=q), sig("t.add", 1, 2), sig("t.add", 3)).apply_async()
print(r.parent.parent.id, r.parent.id, r.id)
try:
    print("no error", r.get(timeout=20))
except Exception as e:
    print("raised", type(e).__name__, e)
"#,
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(out[1].starts_with("raised JobFailed"), "{out:?}");
    let ids: Vec<&str> = out[0].split_whitespace().collect();
    assert_eq!(state(stack, ids[0]), "FAILURE");
    for rest in &ids[1..] {
        let job = stack.show(rest);
        assert_eq!(job["state"], "FAILURE", "{job}");
        assert_eq!(job["deliveries"], 0, "it ran: {job}");
        assert!(
            !stack.history(rest).iter().any(|s| s == "RECEIVED"),
            "{job}"
        );
    }
    stack.stop(&["c1"]);
}

#[test]
fn a_retried_step_keeps_its_chain_and_links_and_its_last_failure_ends_them() {
    let stack = Stack::with(Options {
        own_queue: Some(OwnQueue {
            workers: &["c1"],
            keys: "concurrency = 2\nretries = 1\nretry_backoff_seconds = 0.1".into(),
            tasks: TASKS.into(),
        }),
        ..Options::default()
    });
    stack.start(&["c1"]);
    let out = client(
        &stack,
        r#"
first = sig("t.fail", queue=q, link_error=sig("t.note"))
r = chain(first, sig("t.add", 1, 2)).apply_async()
print(r.parent.id, r.id)
try:
    print("no error", r.get(timeout=20))
except Exception as e:
    print("raised", type(e).__name__)
"#,
    );
    assert_eq!(out[1], "raised JobFailed", "{out:?}");
    let ids: Vec<&str> = out[0].split_whitespace().collect();
    let failed = stack.show(ids[0]);
    assert_eq!(failed["retries"], 1, "{failed}");
    let rest = stack.show(ids[1]);
    assert_eq!(rest["state"], "FAILURE", "{rest}");
    eventually(Duration::from_secs(15), "the errback", || {
        std::fs::read_to_string(stack.file("notes")).unwrap_or_default() == format!("{}\n", ids[0])
    });
    stack.stop(&["c1"]);
}

#[test]
fn link_error_runs_the_errback_with_the_failed_jobs_id_and_link_runs_with_the_result() {
    let stack = canvas_stack(None, "");
    stack.start(&["c1"]);
    let out = client(
        &stack,
        r#"
bad = app.send_task("t.fail", queue=q, link_error=sig("t.note"))
try:
    bad.get(timeout=20)
except Exception as e:
    print(bad.id)
good = app.send_task("t.add", args=[20, 22], queue=q, link=sig("t.note"))
print(good.get(timeout=20))
"#,
    );
    let failed = &out[0];
    assert_eq!(out[1], "42", "{out:?}");
    eventually(Duration::from_secs(15), "the errback and the link", || {
        std::fs::read_to_string(stack.file("notes"))
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    });
    let notes = std::fs::read_to_string(stack.file("notes")).unwrap_or_default();
    let mut lines: Vec<&str> = notes.lines().collect();
    lines.sort();
    let mut want = vec!["42", failed.as_str()];
    want.sort();
    assert_eq!(lines, want, "{notes}");
    stack.stop(&["c1"]);
}

#[test]
fn a_group_returns_every_members_result_and_each_member_keeps_its_group() {
    let stack = canvas_stack(None, "");
    stack.start(&["c1", "c2"]);
    let out = client(
        &stack,
        r#"
g = group(sig("t.add", i, i, queue=q) for i in range(5)).apply_async()
print(g.id, " ".join(r.id for r in g.results))
print(g.get(timeout=30))
"#,
    );
    assert_eq!(out[1], "[0, 2, 4, 6, 8]", "{out:?}");
    let ids: Vec<&str> = out[0].split_whitespace().collect();
    for (i, id) in ids[1..].iter().enumerate() {
        let job = stack.show(id);
        assert_eq!(job["group_id"], ids[0], "{job}");
        assert_eq!(job["group_index"], i, "{job}");
    }
    let shown = stack.ok(&["jobs", "show", ids[1]]);
    assert!(shown.contains(ids[0]), "{shown}");
    stack.stop(&["c1", "c2"]);
}

#[test]
fn a_worker_killed_after_committing_a_step_still_has_the_next_published_once() {
    let stack = canvas_stack(None, "");
    // c1 commits its ends but never drains the outbox: as if killed between commit and publish.
    let ran = stack.cm_via(&["env", "CM_TEST_OUTBOX=off"], &["queue", "start", "c1"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let (_client, lines) = spawn_python(
        &client_with_results(
            r#"
import sys
from celery import chain
q = sys.argv[1]
r = chain(app.signature("t.add", args=(1, 1), queue=q), app.signature("t.add", args=(5,))).apply_async()
print(r.parent.id, r.id, flush=True)
print(r.get(timeout=60), flush=True)
"#,
        ),
        &[stack.queue()],
    );
    let ids = lines.recv_timeout(Duration::from_secs(20)).expect("ids");
    let ids: Vec<&str> = ids.split_whitespace().collect();
    eventually(Duration::from_secs(20), "the first step's end", || {
        state(&stack, ids[0]) == "SUCCESS"
    });
    // Recorded in the end's transaction, and not published.
    std::thread::sleep(Duration::from_millis(1500));
    let held = stack.show(ids[1]);
    assert_eq!(held["state"], "PENDING", "{held}");
    assert_eq!(held["deliveries"], 0, "{held}");
    stack.kill9("c1");
    stack.start(&["c2"]);
    let got = lines.recv_timeout(Duration::from_secs(30)).expect("result");
    assert_eq!(got, "7");
    let done = stack.show(ids[1]);
    assert_eq!(done["deliveries"], 1, "published once: {done}");
    let received = stack
        .history(ids[1])
        .iter()
        .filter(|s| *s == "RECEIVED")
        .count();
    assert_eq!(received, 1, "{:?}", stack.history(ids[1]));
    stack.stop(&["c2"]);
}

#[test]
fn get_on_a_job_whose_worker_was_killed_mid_job_gets_the_result_of_its_republished_run() {
    let stack = canvas_stack(None, "lease_after_seconds = 1\nlease_seconds = 3");
    stack.start(&["c1"]);
    let (_client, lines) = spawn_python(
        &client_with_results(
            r#"
import sys
r = app.send_task("t.slow", args=[41], queue=sys.argv[1])
print(r.id, flush=True)
print(r.get(timeout=60), flush=True)
"#,
        ),
        &[stack.queue()],
    );
    let id = lines.recv_timeout(Duration::from_secs(20)).expect("id");
    // Leased (acked): the broker no longer holds its message; only the store does.
    eventually(Duration::from_secs(10), "the job's lease", || {
        stack.show(&id)["lease_owner"].is_string()
    });
    stack.kill9("c1");
    stack.start(&["c2"]);
    let got = lines.recv_timeout(Duration::from_secs(40)).expect("result");
    assert_eq!(got, "41");
    let job = stack.show(&id);
    assert_eq!(job["state"], "SUCCESS", "{job}");
    assert!(stack.history(&id).iter().any(|s| s == "REQUEUED"), "{job}");
    stack.stop(&["c2"]);
}

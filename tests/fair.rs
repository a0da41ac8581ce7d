//! Fair dispatch (issue 31): a quick job never waits behind a long one on a busy worker while
//! another worker of its queue is idle. Two real workers with the shipped defaults (concurrency
//! 1, prefetch 4), a long command and quick ones, over the real broker; the store says who ran
//! what and when.

mod common;

use std::time::Duration;

use common::web::Web;
use common::*;

/// `t.long` sleeps far past the test, `t.short` 2 s; `t.quick` is done at once.
const TASKS: &str = r#"[tasks."t.long"]
command = ["/bin/sleep", "60"]
kill_grace = 1
[tasks."t.short"]
command = ["/bin/sleep", "2"]
[tasks."t.quick"]
command = ["/bin/true"]
"#;

/// Workers `c1` and `c2` on a queue of their own, one job at a time each (prefetch 4 by
/// default); `keys`: more keys of the queue's table.
fn two_workers(keys: &str) -> Stack {
    let stack = Stack::with(Options {
        // Node names of its own: Celery's remote control reaches a worker by its node name,
        // and other tests' workers are named c1 and c2 too.
        node_host: Some(unique("fairhost").replace('_', "-")),
        own_queue: Some(OwnQueue {
            workers: &["c1", "c2"],
            keys: format!("concurrency = 1\n{keys}"),
            tasks: TASKS.into(),
        }),
        ..Options::default()
    });
    stack.start(&["c1", "c2"]);
    stack
}

fn field(stack: &Stack, id: &str, name: &str) -> String {
    stack.job(id)[name].as_str().unwrap_or_default().to_string()
}

/// Starts `t.long` and waits until it runs: its id and the node running it.
fn long_job(stack: &Stack) -> (String, String) {
    long_job_of(stack, "t.long")
}

fn long_job_of(stack: &Stack, task: &str) -> (String, String) {
    let id = stack.call(task).id();
    eventually(Duration::from_secs(20), "the long job to start", || {
        field(stack, &id, "state") == "STARTED"
    });
    let node = field(stack, &id, "worker");
    (id, node)
}

/// Publishes eight quick jobs: their ids.
fn quick_jobs(stack: &Stack) -> Vec<String> {
    (0..8).map(|_| stack.call("t.quick").id()).collect()
}

fn done(stack: &Stack, ids: &[String]) -> usize {
    ids.iter()
        .filter(|id| field(stack, id, "state") == "SUCCESS")
        .count()
}

#[test]
fn quick_jobs_go_to_the_idle_worker_not_behind_the_long_one() {
    let stack = two_workers("");
    let (long, busy) = long_job(&stack);
    let quick = quick_jobs(&stack);
    eventually(Duration::from_secs(20), "all eight quick jobs", || {
        done(&stack, &quick) == quick.len()
    });
    assert_eq!(
        field(&stack, &long, "state"),
        "STARTED",
        "the quick jobs ended while the long one still runs"
    );
    for id in &quick {
        let ran_on = field(&stack, id, "worker");
        assert_ne!(ran_on, busy, "quick job {id} ran behind the long one");
    }
}

#[test]
fn with_hand_back_off_prefetched_quick_jobs_wait_behind_the_long_one_and_the_store_says_where() {
    // The same run with `hand_back_after_ms = 0`: what fair dispatch prevents (and so what the
    // test above would see without it). The jobs the busy worker holds unstarted are in the
    // store as held by it, with why; a pause gives them back (PENDING, "queue paused"); after
    // the resume each runs once.
    let stack = two_workers("hand_back_after_ms = 0");
    let q = stack.queue().to_string();
    let (long, busy) = long_job(&stack);
    let quick = quick_jobs(&stack);
    let waiting = |stack: &Stack| {
        quick
            .iter()
            .filter(|id| field(stack, id, "state") != "SUCCESS")
            .cloned()
            .collect::<Vec<_>>()
    };
    // The idle worker runs what it was given; the busy one's prefetched share stays unstarted.
    // Each quick job ends, or is held by the busy worker (recorded within a second and a half).
    eventually(Duration::from_secs(20), "the idle worker's share", || {
        done(&stack, &quick) >= 5
            && waiting(&stack).iter().all(|id| {
                field(&stack, id, "state") == "RECEIVED" && field(&stack, id, "worker") == busy
            })
    });
    let stuck = waiting(&stack);
    assert!(
        !stuck.is_empty(),
        "with hand back off, some quick job waits behind the long one on {busy}"
    );
    assert_eq!(field(&stack, &long, "state"), "STARTED");
    // Recorded within a second and a half of being held: RECEIVED by the busy worker, not started.
    for id in &stuck {
        eventually(Duration::from_secs(5), "the held job in the store", || {
            field(&stack, id, "state") == "RECEIVED"
        });
        let shown = stack.show(id);
        assert_eq!(shown["worker"], busy.as_str(), "job {id}: {shown}");
        assert!(shown["started_ms"].is_null(), "job {id} has not started");
        let why = shown["waits_for"].as_str().unwrap_or_default();
        assert!(
            why.starts_with(&format!("held by worker {busy}")),
            "job {id} waits for: {why:?}"
        );
        let text = stack.ok(&["jobs", "show", id]);
        assert!(text.contains("waits for held by worker"), "{text}");
    }
    // Celery's `inspect reserved` lists them on the busy worker.
    let reserved = common::celery::inspect(&busy, &["reserved"]);
    let mut listed: Vec<&str> = (reserved.as_array().into_iter().flatten())
        .filter_map(|t| t["id"].as_str())
        .collect();
    listed.sort();
    let mut held: Vec<&str> = stuck.iter().map(String::as_str).collect();
    held.sort();
    assert_eq!(listed, held, "{reserved}");
    // The web says the same: the job's JSON, the list's, and the jobs table.
    let web = Web::start(&stack);
    let (_, one) = web.get_json(&format!("/api/jobs/{}", stuck[0]));
    let why = one["job"]["waits_for"].as_str().unwrap_or_default();
    assert!(why.starts_with("held by worker"), "{one}");
    let (_, listed) = web.get_json("/api/jobs?state=RECEIVED");
    let rows = listed["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), stuck.len(), "{listed}");
    assert!(rows.iter().all(|j| j["waits_for"]
        .as_str()
        .unwrap_or_default()
        .starts_with("held by worker")));
    let page = web
        .get("/cm/launch/db_stats?state=RECEIVED")
        .text()
        .expect("page");
    assert!(
        page.contains("<small class=\"why\">held by worker"),
        "{page}"
    );
    // A pause hands them back: PENDING again, and why says the queue is paused. (The idle
    // worker stops first: it would follow the pause up to half a second later than the busy
    // one, and could take them meanwhile.)
    let idle = ["c1", "c2"]
        .into_iter()
        .find(|name| !busy.starts_with(&format!("{name}@")))
        .expect("the idle worker");
    stack.stop(&[idle]);
    stack.ok(&["queue", "pause", &q]);
    for id in &stuck {
        eventually(Duration::from_secs(10), "the held job given back", || {
            field(&stack, id, "state") == "PENDING"
        });
        let why = stack.show(id)["waits_for"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(why.starts_with(&format!("queue {q} paused by ")), "{why:?}");
        assert!(
            stack.history(id).iter().any(|s| s == "REQUEUED"),
            "job {id}: {:?}",
            stack.history(id)
        );
    }
    // Resumed, with the long job stopped: every quick job ends, each started once.
    stack.ok(&["jobs", "revoke", &long, "--terminate"]);
    stack.ok(&["queue", "resume", &q]);
    eventually(Duration::from_secs(30), "every quick job", || {
        done(&stack, &quick) == quick.len()
    });
    for id in &quick {
        let starts = stack.history(id).iter().filter(|s| *s == "STARTED").count();
        assert_eq!(starts, 1, "job {id}: {:?}", stack.history(id));
    }
}

#[test]
fn after_the_long_job_a_run_of_quick_ones_brings_the_full_prefetch_back() {
    // Handing back lowers the busy worker's prefetch to its concurrency; once its long job ended,
    // a streak of quick jobs raises it again.
    let stack = two_workers("");
    let (long, busy) = long_job_of(&stack, "t.short");
    let quick = quick_jobs(&stack);
    eventually(Duration::from_secs(20), "the long job to end", || {
        field(&stack, &long, "state") == "SUCCESS"
    });
    let name = busy.split('@').next().unwrap_or_default();
    let mut quick = quick;
    eventually(Duration::from_secs(60), "the full prefetch back", || {
        quick.extend(quick_jobs(&stack));
        stack.log(name).contains("consuming with prefetch 4 again")
    });
    eventually(Duration::from_secs(30), "every quick job", || {
        done(&stack, &quick) == quick.len()
    });
}

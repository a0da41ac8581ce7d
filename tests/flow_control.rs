//! Pause, resume and live concurrency (issue 31) with real workers, broker, store and command
//! tasks: a pause holds across a restart and a new worker and its messages stay queued; a
//! resume drains them, each job run once; `--terminate` sends running jobs back to the queue;
//! a scale 1 -> 4 -> 1 under load changes how many jobs overlap without a job lost or run
//! twice; the web's buttons need the form token and order the same rows.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A command that notes its start and end (job id, epoch seconds) and sleeps between.
const RECORD: &str = r#"[tasks."t.rec"]
command = ["/bin/sh", "-c", "echo start $CM_JOB_ID $(date +%s.%N) >> {dir}/runs; sleep 0.3; echo end $CM_JOB_ID $(date +%s.%N) >> {dir}/runs"]
"#;

/// A command that sleeps the first time it runs and succeeds the second (a marker file).
const TWICE: &str = r#"[tasks."t.twice"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/twice; if [ -e {dir}/second ]; then exit 0; fi; touch {dir}/second; exec sleep 60"]
"#;

/// A stack whose own queue (workers `c1`, `c2`, one job at a time) takes `tasks`.
fn stack(tasks: &str) -> Stack {
    Stack::with(Options {
        grace_seconds: 6.0,
        own_queue: Some(OwnQueue {
            workers: &["c1", "c2"],
            keys: "concurrency = 1".into(),
            tasks: tasks.into(),
        }),
        ..Options::default()
    })
}

/// One run of a job: its id, start and end (epoch seconds).
struct Run {
    id: String,
    start: f64,
    end: f64,
}

/// The runs `t.rec` noted, each start paired with its end.
fn runs(stack: &Stack) -> Vec<Run> {
    let text = std::fs::read_to_string(stack.file("runs")).unwrap_or_default();
    let mut starts: HashMap<String, Vec<f64>> = HashMap::new();
    let mut runs = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, id, at] = parts[..] else {
            panic!("a line of runs: {line:?}")
        };
        let at: f64 = at.parse().expect("a time");
        match what {
            "start" => starts.entry(id.into()).or_default().push(at),
            _ => {
                let start = starts.get_mut(id).and_then(Vec::pop).expect("its start");
                runs.push(Run {
                    id: id.into(),
                    start,
                    end: at,
                });
            }
        }
    }
    runs
}

/// How many runs overlap at most, of those that start in `from..to`.
fn most_at_once(runs: &[Run], from: f64, to: f64) -> usize {
    let within: Vec<&Run> = runs
        .iter()
        .filter(|r| r.start >= from && r.start < to)
        .collect();
    within
        .iter()
        .map(|r| {
            within
                .iter()
                .filter(|o| o.start <= r.start && r.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Each of `ids` SUCCESS and run exactly once.
fn each_ran_once(stack: &Stack, ids: &[String]) {
    let runs = runs(stack);
    for id in ids {
        assert_eq!(stack.job(id)["state"], "SUCCESS", "{id}");
        let n = runs.iter().filter(|r| &r.id == id).count();
        assert_eq!(n, 1, "job {id} ran {n} times");
    }
    assert_eq!(runs.len(), ids.len(), "no run of a job not ours");
}

/// `cm queue status WORKER --json`'s row.
fn status_of(stack: &Stack, worker: &str) -> Value {
    stack.status(&[worker])[0].clone()
}

fn state_of(stack: &Stack, worker: &str) -> String {
    status_of(stack, worker)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_pause_holds_across_a_restart_and_a_new_worker_and_a_resume_drains_the_queue() {
    let stack = stack(RECORD);
    let q = stack.queue().to_string();
    stack.start(&["c1"]);
    let said = stack.ok(&["queue", "pause", &q]);
    assert!(
        said.contains(&format!("queue {q} paused on every host")),
        "{said}"
    );
    eventually(Duration::from_secs(3), "c1 to say it is paused", || {
        state_of(&stack, "c1") == "paused"
    });
    let ids = stack.call("t.rec").count(12).ids();
    assert_eq!(ids.len(), 12);

    let held = |when: &str| {
        std::thread::sleep(Duration::from_secs(2));
        assert!(runs(&stack).is_empty(), "{when}: nothing ran while paused");
        assert_eq!(
            queue_depth(&q),
            12,
            "{when}: the messages wait in the broker"
        );
        for id in &ids {
            assert_eq!(stack.job(id)["state"], "PENDING", "{when}: {id}");
        }
    };
    held("paused");
    let restarted = stack.ok(&["queue", "restart", "c1"]);
    assert!(restarted.contains("ready"), "{restarted}");
    assert_eq!(
        state_of(&stack, "c1"),
        "paused",
        "a restarted worker reads the pause"
    );
    stack.start(&["c2"]);
    assert_eq!(
        state_of(&stack, "c2"),
        "paused",
        "a new worker reads the pause"
    );
    held("after a restart and a new worker");
    assert!(stack.log("c1").contains("paused"), "{}", stack.log("c1"));

    // Resuming another host changes nothing here; resuming every host drains the queue.
    stack.ok(&["queue", "resume", &q, "--host", "elsewhere.example"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(runs(&stack).is_empty(), "another host's resume is not ours");
    stack.ok(&["queue", "resume", &q]);
    eventually(Duration::from_secs(30), "every job to succeed", || {
        ids.iter().all(|id| stack.job(id)["state"] == "SUCCESS")
    });
    each_ran_once(&stack, &ids);
    assert_eq!(queue_depth(&q), 0);
    for w in ["c1", "c2"] {
        assert_eq!(state_of(&stack, w), "running", "{w}");
    }
}

#[test]
fn a_pause_of_one_host_leaves_the_others_and_an_unknown_queue_is_refused() {
    let stack = Stack::with(Options {
        node_host: Some("flowhost-a".into()),
        own_queue: Some(OwnQueue {
            workers: &["c1"],
            keys: "concurrency = 1".into(),
            tasks: RECORD.into(),
        }),
        ..Options::default()
    });
    let q = stack.queue().to_string();
    stack.start(&["c1"]);
    stack.ok(&["queue", "pause", &q, "--host", "flowhost-b"]);
    std::thread::sleep(Duration::from_secs(1));
    let id = stack.call("t.rec").id();
    eventually(
        Duration::from_secs(20),
        "a job while another host is paused",
        || stack.job(&id)["state"] == "SUCCESS",
    );
    assert_eq!(state_of(&stack, "c1"), "running");
    stack.ok(&["queue", "pause", &q, "--host", "flowhost-a"]);
    eventually(Duration::from_secs(3), "c1 (on flowhost-a) paused", || {
        state_of(&stack, "c1") == "paused"
    });
    // Every host's resume clears both hosts' pauses.
    stack.ok(&["queue", "resume", &q]);
    eventually(Duration::from_secs(3), "c1 consuming", || {
        state_of(&stack, "c1") == "running"
    });
    let id = stack.call("t.rec").id();
    eventually(Duration::from_secs(20), "the job after the resume", || {
        stack.job(&id)["state"] == "SUCCESS"
    });
    let err = stack.fails(&["queue", "pause", "no-such-queue"], 64);
    assert!(
        err.contains("no queue \"no-such-queue\"") && err.contains(&q),
        "{err}"
    );
}

#[test]
fn a_pause_with_terminate_sends_the_running_job_back_and_it_runs_again_on_resume() {
    let stack = stack(TWICE);
    let q = stack.queue().to_string();
    stack.start(&["c1"]);
    let id = stack.call("t.twice").id();
    eventually(Duration::from_secs(20), "the first run", || {
        stack.job(&id)["state"] == "STARTED"
    });
    stack.ok(&["queue", "pause", &q, "--terminate"]);
    eventually(Duration::from_secs(10), "the job to be given back", || {
        stack.job(&id)["state"] == "PENDING"
    });
    eventually(
        Duration::from_secs(5),
        "its message back in the queue",
        || queue_depth(&q) == 1,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(queue_depth(&q), 1, "paused: it is not taken again");
    stack.ok(&["queue", "resume", &q]);
    eventually(Duration::from_secs(20), "the second run to succeed", || {
        stack.job(&id)["state"] == "SUCCESS"
    });
    let twice = std::fs::read_to_string(stack.file("twice")).unwrap_or_default();
    assert_eq!(twice.lines().count(), 2, "{twice}");
}

#[test]
fn a_scale_from_1_to_4_to_1_under_load_changes_the_overlap_and_loses_no_job() {
    let stack = stack(RECORD);
    let q = stack.queue().to_string();
    stack.start(&["c1"]);
    let ids = stack.call("t.rec").count(60).ids();
    eventually(Duration::from_secs(20), "three jobs at one slot", || {
        runs(&stack).len() >= 3
    });
    let up = now_s();
    stack.ok(&["queue", "scale", &q, "--concurrency", "4"]);
    eventually(Duration::from_secs(3), "c1 at 4 slots", || {
        let s = status_of(&stack, "c1");
        s["concurrency"] == 4 && s["desired_concurrency"] == 4
    });
    eventually(Duration::from_secs(20), "twenty more jobs", || {
        runs(&stack).iter().filter(|r| r.start > up).count() >= 20
    });
    let down = now_s();
    stack.ok(&["queue", "scale", &q, "--concurrency", "1"]);
    eventually(Duration::from_secs(60), "every job to succeed", || {
        ids.iter().all(|id| stack.job(id)["state"] == "SUCCESS")
    });
    each_ran_once(&stack, &ids);
    let runs = runs(&stack);
    assert_eq!(most_at_once(&runs, 0.0, up), 1, "one slot before the scale");
    assert_eq!(
        most_at_once(&runs, up, down),
        4,
        "four slots while scaled up"
    );
    // Orders are read each half second; running jobs (0.3 s) end before the slots go.
    let settled = down + 1.5;
    assert!(
        runs.iter().filter(|r| r.start > settled).count() >= 5,
        "enough jobs after the scale down to tell"
    );
    assert_eq!(most_at_once(&runs, settled, f64::MAX), 1, "one slot again");
    let s = status_of(&stack, "c1");
    assert_eq!(
        (s["concurrency"].clone(), s["desired_concurrency"].clone()),
        (json!(1), json!(1))
    );
    // The prefetch keeps the config's ratio (4 per slot by default).
    assert!(
        stack.log("c1").contains("concurrency 1 -> 4 (prefetch 16)"),
        "{}",
        stack.log("c1")
    );
}

#[test]
fn the_web_shows_each_queue_and_its_buttons_need_the_form_token() {
    let stack = stack(RECORD);
    let q = stack.queue().to_string();
    stack.start(&["c1"]);
    let app = web::App::new(&stack);
    let page = app.get("/cm/queues");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("data-queue=\"{q}\"")),
        "{}",
        page.body
    );

    let refused = app.post_form(&format!("/cm/queues/{q}/pause"), &[("csrf", "forged")]);
    assert_eq!(refused.status, 403);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        state_of(&stack, "c1"),
        "running",
        "a forged form pauses nothing"
    );

    let csrf = app.csrf();
    let paused = app.post_form(&format!("/cm/queues/{q}/pause"), &[("csrf", &csrf)]);
    assert_eq!(paused.status, 200, "{}", paused.body);
    eventually(Duration::from_secs(3), "c1 paused from the web", || {
        state_of(&stack, "c1") == "paused"
    });
    let (status, listed) = app.get_json("/api/queues");
    assert_eq!(status, 200);
    let mine = listed
        .as_array()
        .and_then(|l| l.iter().find(|v| v["queue"] == q.as_str()))
        .cloned()
        .expect("our queue listed");
    assert_eq!(mine["paused"], true, "{mine}");
    assert_eq!(
        mine["orders"][0]["changed_by"]
            .as_str()
            .map(|s| s.starts_with("web@")),
        Some(true)
    );

    let scaled = app.post_form(
        &format!("/cm/queues/{q}/scale"),
        &[("csrf", &csrf), ("concurrency", "3")],
    );
    assert_eq!(scaled.status, 200, "{}", scaled.body);
    let bad = app.post_form(
        &format!("/cm/queues/{q}/scale"),
        &[("csrf", &csrf), ("concurrency", "0")],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The JSON twins: resume, and refusals for no such queue or action.
    let (status, done) = app.post_json(&format!("/api/queues/{q}/resume"), &json!({}));
    assert_eq!(status, 200, "{done}");
    eventually(Duration::from_secs(3), "c1 resumed from /api/", || {
        let s = status_of(&stack, "c1");
        s["state"] == "running" && s["concurrency"] == 3
    });
    let (status, _) = app.post_json("/api/queues/no-such-queue/pause", &json!({}));
    assert_eq!(status, 404);
    let (status, _) = app.post_json(&format!("/api/queues/{q}/explode"), &json!({}));
    assert_eq!(status, 400);
    let id = stack.call("t.rec").id();
    eventually(
        Duration::from_secs(20),
        "a job after the web's resume",
        || stack.job(&id)["state"] == "SUCCESS",
    );
}

/// `cm queue status --all --json`: every worker of the queues on every host, by node name.
fn remote_states(stack: &Stack) -> HashMap<String, (String, Value)> {
    let out = stack.ok(&["queue", "status", "--all", "--json"]);
    let all: Value = serde_json::from_str(&out).expect("status --all JSON");
    all.as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["node"].as_str().unwrap_or_default().to_string(),
                (
                    w["state"].as_str().unwrap_or_default().to_string(),
                    w["concurrency"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn on_postgresql_one_hosts_orders_reach_the_other_hosts_workers() {
    let db = PgDatabase::new();
    let a = Stack::with(Options {
        store_url: Some(db.url.clone()),
        node_host: Some("flow-a".into()),
        own_queue: Some(OwnQueue {
            workers: &["c1"],
            keys: "concurrency = 1".into(),
            tasks: RECORD.into(),
        }),
        ..Options::default()
    });
    let b = a.second_host("flow-a", "flow-b");
    let q = a.queue().to_string();
    a.start(&["c1"]);
    b.start(&["c1"]);

    // Host a pauses host b's workers: only a's run jobs.
    a.ok(&["queue", "pause", &q, "--host", "flow-b"]);
    eventually(Duration::from_secs(3), "c1@flow-b paused", || {
        state_of(&b, "c1") == "paused"
    });
    assert_eq!(state_of(&a, "c1"), "running");
    let states = remote_states(&a);
    assert_eq!(states["c1@flow-b"].0, "paused", "{states:?}");
    assert_eq!(states["c1@flow-a"].0, "running", "{states:?}");
    let ids = a.call("t.rec").count(8).ids();
    eventually(Duration::from_secs(30), "the jobs on host a", || {
        ids.iter().all(|id| a.job(id)["state"] == "SUCCESS")
    });
    for id in &ids {
        assert_eq!(a.job(id)["worker"], "c1@flow-a", "{id}");
    }

    // Host b's every-host resume and scale reach both.
    b.ok(&["queue", "resume", &q]);
    b.ok(&["queue", "scale", &q, "--concurrency", "3"]);
    for (stack, host) in [(&a, "flow-a"), (&b, "flow-b")] {
        eventually(
            Duration::from_secs(3),
            &format!("c1@{host} at 3 slots"),
            || {
                let s = status_of(stack, "c1");
                s["state"] == "running" && s["concurrency"] == 3
            },
        );
    }
    let states = remote_states(&b);
    assert_eq!(
        states["c1@flow-a"],
        ("running".to_string(), json!(3)),
        "{states:?}"
    );
}

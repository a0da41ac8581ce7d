//! Jobs that are never lost: states and history in the real store, failures, retries, kill -9.

mod common;

use std::time::Duration;

use common::celery::{client_with_results, python};
use common::*;

const LAUNCH_STATES: [&str; 7] = [
    "PENDING", "RECEIVED", "STARTED", "running", "deploy", "active", "SUCCESS",
];
const PROVISION_STATES: [&str; 8] = [
    "PENDING",
    "RECEIVED",
    "STARTED",
    "INITIATING",
    "PREPARING_IMAGE",
    "BOOTING",
    "AVAILABLE",
    "SUCCESS",
];

/// Launch and provision with --wait; every job ends SUCCESS with every transition recorded.
fn every_job_is_final_with_complete_history(stack: &Stack) {
    stack.start(&[]);
    let launched = stack
        .launch()
        .server("sierra_openstack_grizzly")
        .recipe("Slurm Cluster")
        .hosts("vm[1-5]")
        .wait()
        .ids();
    let provisioned = stack.provision("h[1-5]").image("debian-12").wait().ids();
    assert_eq!((launched.len(), provisioned.len()), (5, 5));

    let all = stack.jobs();
    assert_eq!(all.len(), 10);
    for job in &all {
        assert_eq!(job["state"], "SUCCESS", "{job}");
        assert_eq!(job["deliveries"], 1, "{job}");
        for key in ["submitted_ms", "started_ms", "finished_ms"] {
            assert!(job[key].as_i64().is_some(), "{key} missing: {job}");
        }
        assert!(job["error"].is_null());
    }
    for id in &launched {
        assert_eq!(stack.history(id), LAUNCH_STATES, "{id}");
        let job = stack.show(id);
        assert_eq!(job["server"], "sierra_openstack_grizzly");
        assert_eq!(job["recipe"], "Slurm Cluster");
        let worker = job["worker"].as_str().expect("worker");
        assert!(
            worker.starts_with("l1@") || worker.starts_with("l2@"),
            "{worker}"
        );
        assert_eq!(job["queue"], stack.launch.as_str());
    }
    for id in &provisioned {
        assert_eq!(stack.history(id), PROVISION_STATES, "{id}");
        let worker = stack.show(id)["worker"].clone();
        assert!(
            worker.as_str().is_some_and(|w| w.starts_with('p')),
            "{worker}"
        );
    }
}

#[test]
fn every_job_reaches_a_final_state_with_complete_history_on_sqlite() {
    let stack = Stack::new();
    every_job_is_final_with_complete_history(&stack);
    assert!(
        stack.store_file().exists(),
        "SQLite store not in the config's folder"
    );
}

#[test]
fn every_job_reaches_a_final_state_with_complete_history_on_postgres() {
    let db = PgDatabase::new();
    let stack = Stack::with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    });
    every_job_is_final_with_complete_history(&stack);
    assert!(!stack.store_file().exists(), "used SQLite, not PostgreSQL");
    drop(stack);
}

/// A stack whose recipe `Broken` always fails to deploy (the launcher queue's `launch_keys`).
fn broken_recipe_stack(launch_keys: &str) -> Stack {
    Stack::with(Options {
        launch_keys: launch_keys.into(),
        extra: r#"
[recipes.Hadoop]
description = "works"
[recipes.Broken]
description = "always fails to deploy"
fail = true
"#
        .into(),
        ..Options::default()
    })
}

#[test]
fn wait_exits_non_zero_naming_failed_jobs_and_on_timeout() {
    let stack = broken_recipe_stack("");
    // No workers yet: the wait cannot end in time.
    let stderr = stack.launch().timeout(0.5).fails(75);
    assert!(stderr.contains("timed out"), "{stderr}");

    stack.start(&[]);
    let stderr = stack
        .launch()
        .recipe("Broken")
        .hosts("b[1-2]")
        .wait()
        .fails(1);
    assert!(stderr.contains("2 of 2 jobs failed"), "{stderr}");
    assert!(stderr.contains("failed to deploy"), "{stderr}");

    let failed = stack.ok(&["jobs", "--state", "FAILURE", "--json"]);
    let failed: Vec<serde_json::Value> = serde_json::from_str(&failed).expect("json");
    assert_eq!(failed.len(), 2);
    assert!(failed[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("Broken")));
    // The job published before the workers started ran once they did.
    eventually(Duration::from_secs(10), "the early job to succeed", || {
        stack
            .ok(&["jobs", "--state", "SUCCESS", "--json"])
            .contains("Hadoop")
    });
}

/// `cm call TASK` publishes any task with JSON arguments, prints its id, and with `--wait` its
/// result; what cannot be a job is refused before anything is published.
#[test]
fn call_publishes_a_task_with_json_arguments() {
    let stack = Stack::new();
    stack.start(&["p1"]);
    let lines = stack
        .call("cm.provision")
        .args(r#"["h1", "ubuntu"]"#)
        .wait()
        .ids();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let result: serde_json::Value = serde_json::from_str(&lines[1]).expect("a JSON result");
    assert_eq!(result["host"], "h1");
    let row = stack.show(&lines[0]);
    assert_eq!(row["state"], "SUCCESS");
    assert_eq!(row["queue"], stack.prov.as_str());

    let kw = stack
        .call("cm.provision")
        .kwargs(r#"{"host": "h2", "image": "i"}"#)
        .ids();
    assert_eq!(kw.len(), 1, "{kw:?}");

    // The CLI's own refusals, argv as a user would type it.
    for (args, why) in [
        (&["call", "cm.nope"][..], "unknown task"),
        (
            &["call", "cm.provision", "--args", "[1,"],
            "is not a JSON list",
        ),
        (
            &["call", "cm.provision", "--kwargs", "[]"],
            "is not a JSON object",
        ),
        (
            &[
                "call",
                "cm.provision",
                "--args",
                r#"["h", "i"]"#,
                "--queue",
                "nope",
            ],
            "unknown queue",
        ),
        (
            &["call", "cm.provision", "--args", r#"["h"]"#],
            "missing required argument 'image'",
        ),
    ] {
        let stderr = stack.fails(args, 64);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    stack.server_stop();
}

#[test]
fn a_failing_job_is_retried_with_backoff_then_fails() {
    let stack = broken_recipe_stack("retries = 2\nretry_backoff_seconds = 0.05");
    stack.start(&["l1", "l2"]);
    let ran = stack.launch().recipe("Broken").timeout(30.0).run();
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let id = ran.stdout.trim();
    let job = stack.show(id);
    let states = stack.history(id);
    assert_eq!(job["state"], "FAILURE");
    assert_eq!(job["retries"], 2);
    let count = |state: &str| states.iter().filter(|s| *s == state).count();
    assert_eq!(count("RETRY"), 2, "{states:?}");
    assert_eq!(count("RECEIVED"), 3, "{states:?}");
    // REQUEUED, the scheduler's note of a retry's store-held wait, may come after a quick end.
    let last = states.iter().rev().find(|s| *s != "REQUEUED").cloned();
    assert_eq!(last.as_deref(), Some("FAILURE"), "{states:?}");
}

#[test]
fn kill_9_of_a_busy_worker_loses_no_job() {
    let stack = Stack::with(Options {
        step_seconds: (0.002, 0.004),
        ..Options::default()
    });
    stack.start(&["l1", "l2"]);
    let ids = stack.launch().recipe("Ganglia").hosts("vm[1-500]").ids();
    assert_eq!(ids.len(), 500);
    // Kill while a job is mid-flight on l1 (its last log line is a step, not a final state).
    eventually(
        Duration::from_secs(30),
        "l1 to be in the middle of a job",
        || {
            let log = stack.log("l1");
            let done = log.matches(": SUCCESS").count();
            let last = log.lines().last().unwrap_or_default().to_string();
            done >= 20 && (last.ends_with(": running") || last.ends_with(": deploy"))
        },
    );
    stack.kill9("l1");

    eventually(Duration::from_secs(60), "all 500 jobs to be final", || {
        stack.all_succeeded(500)
    });
    let all = stack.jobs();
    for id in &ids {
        assert!(
            all.iter().any(|j| j["id"] == id.as_str()),
            "job {id} missing from the store"
        );
    }
    // What l1 held unacked (the job it was running, its prefetch) went to l2. Judged from the
    // broker's redelivered flag in l2's log, not from the store's delivery count: the running
    // job's RECEIVED may not have been committed yet when the kill landed.
    eventually(
        Duration::from_secs(10),
        "l2 to log a job l1 held as redelivered",
        || stack.log("l2").contains("(redelivered)"),
    );
    // A job whose first delivery did reach the store keeps both in its history.
    let twice = all
        .iter()
        .filter(|j| j["deliveries"].as_i64().unwrap_or(0) >= 2);
    for job in twice {
        let states = stack.history(job["id"].as_str().expect("id"));
        assert!(
            states
                .iter()
                .filter(|s| *s == "RECEIVED" || *s == "REDELIVERED")
                .count()
                >= 2,
            "{states:?}"
        );
    }
    // The killed worker's pid file is stale now: the next command sees it and removes it.
    let status = stack.ok(&["queue", "status", "l1", "--json"]);
    assert!(status.contains("stale pid"), "{status}");
    assert_eq!(queue_depth(&stack.launch), 0);
}

/// Publishes `body` to `queue` as JSON, with the message headers `headers`.
fn publish_raw(queue: &str, body: &[u8], headers: &[(&str, &str)]) {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let mut props = lapin::BasicProperties::default().with_content_type("application/json".into());
    if !headers.is_empty() {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(
                (*k).into(),
                AMQPValue::LongString(LongString::from(v.as_bytes())),
            );
        }
        props = props.with_headers(table);
    }
    publish_to(queue, body, props);
}

#[test]
fn poison_messages_are_dead_lettered_and_the_worker_goes_on() {
    let stack = Stack::new();
    stack.start(&["l1"]);
    let task = |name| [("task", name), ("id", "poison-id")];
    let huge = format!(r#"[["{}", "ubuntu"], {{}}, {{}}]"#, "h".repeat(2 << 20));
    for (body, headers) in [
        (&b"this is not json"[..], &task("cm.launch")[..]),
        (br#"{"a": 1}"#, &task("cm.launch")),
        (br#"[[], {}, {}]"#, &task("cm.nope")),
        (br#"[[], {}, {}]"#, &[]),
        (huge.as_bytes(), &task("cm.provision")),
        // A job whose arguments do not fit is no poison: it ends FAILURE naming the mismatch.
        (
            br#"[[], {"server": [5]}, {}]"#,
            &[("task", "cm.launch"), ("id", "unfit-id")],
        ),
    ] {
        publish_raw(&stack.launch, body, headers);
    }

    // A good job after the poison still runs.
    stack.launch().recipe("Nagios").timeout(20.0).ids();
    let dead = format!("{}.dead", stack.launch);
    eventually(Duration::from_secs(10), "5 dead letters", || {
        queue_depth(&dead) == 5
    });
    let unfit = stack.show("unfit-id");
    assert_eq!(unfit["state"], "FAILURE", "{unfit}");
    assert!(
        unfit["error"]
            .as_str()
            .is_some_and(|e| e.contains("cm.launch() argument 'server' must be a string")),
        "{unfit}"
    );
    let states = stack.history("unfit-id");
    assert!(!states.iter().any(|s| s == "running"), "it ran: {states:?}");

    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&stack.ok(&["dead", "list", "--json"])).expect("json");
    let reasons: Vec<&str> = listed.iter().filter_map(|d| d["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for expected in [
        "not JSON",
        "wrong shape",
        "unknown task \"cm.nope\"",
        "missing header \"task\"",
        "over [worker] max_message_bytes (1048576)",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason with {expected:?} in {reasons:?}"
        );
    }
    assert_eq!(
        queue_depth(&dead),
        5,
        "listing must not consume the dead letters"
    );
    assert!(
        stack.log("l1").contains("poison message"),
        "the log does not say why"
    );

    // Requeued, they are still poison and come straight back.
    let out = stack.ok(&["dead", "requeue"]);
    assert!(out.contains("requeued 5"), "{out}");
    eventually(
        Duration::from_secs(10),
        "the requeued poison back in the dead letters",
        || queue_depth(&dead) == 5 && queue_depth(&stack.launch) == 0,
    );
}

#[test]
fn db_reset_asks_first_and_removes_every_record() {
    let stack = Stack::new();
    stack.start(&[]);
    stack.provision("h[1-3]").wait().ids();
    stack.fails(&["db", "reset"], 64); // without --yes and no terminal: refused
    assert_eq!(stack.jobs().len(), 3);
    let out = stack.ok(&["db", "reset", "--yes"]);
    assert!(out.contains("removed 3 job records"), "{out}");
    assert!(stack.jobs().is_empty());
}

#[test]
fn a_python_celery_client_hands_jobs_to_cm_and_gets_results_over_rpc() {
    let stack = Stack::new();
    stack.start(&[]);
    let out = python(
        &client_with_results(
            r#"
import sys
launch_q, prov_q = sys.argv[1], sys.argv[2]
launch = app.send_task("cm.launch", kwargs={"server": "india_openstack_essex", "recipe": "Hadoop", "kind": "vm", "hosts": "c1"}, queue=launch_q)
prov = app.send_task("cm.provision", args=["c2", "ubuntu"], queue=prov_q)
print(launch.id)
print(prov.id)
print(launch.get(timeout=30)["state"])
print(prov.get(timeout=30)["state"])
bad = app.send_task("cm.launch", kwargs={"server": "nowhere", "recipe": "Hadoop"}, queue=launch_q)
print(bad.id)
try:
    bad.get(timeout=30)
    print("no error")
except Exception as e:
    print("error", type(e).__name__, e)
"#,
        ),
        &[&stack.launch, &stack.prov],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[2..4], ["active", "AVAILABLE"], "{out}");
    assert!(
        lines[5].starts_with("error") && lines[5].contains("unknown server"),
        "{out}"
    );

    for (id, task, state) in [
        (lines[0], "cm.launch", "SUCCESS"),
        (lines[1], "cm.provision", "SUCCESS"),
        (lines[4], "cm.launch", "FAILURE"),
    ] {
        let job = stack.show(id);
        assert_eq!(job["task"], task);
        assert_eq!(job["state"], state, "{job}");
        let states = stack.history(id);
        assert_eq!(
            states.first().map(String::as_str),
            Some("RECEIVED"),
            "a Celery job has no PENDING: {states:?}"
        );
    }
}

/// Takes the next message off `queue`, as a worker would, and puts it back (nack, requeue):
/// its `reply_to`.
fn reply_to_of_next(queue: &str) -> Option<String> {
    with_broker(&broker_url(), async |conn| {
        let mut ch = conn.create_channel().await.expect("channel");
        let mut got = None;
        for _ in 0..200 {
            match ch
                .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
                .await
            {
                Ok(Some(m)) => {
                    got = Some(m);
                    break;
                }
                Ok(None) => {}
                // Not declared yet (the publisher declares it): the broker closed the channel.
                Err(_) => ch = conn.create_channel().await.expect("channel"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let m = got.expect("a message on the queue within 10 s");
        let reply_to = m.properties.reply_to().as_ref().map(|s| s.to_string());
        m.nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack");
        reply_to
    })
    .expect("the test broker")
}

/// A small `--wait` has its jobs answered on its own channel (RabbitMQ's direct reply-to),
/// which the worker does once the final state is stored; a big one (over 100 jobs) is polled
/// and costs the workers no replies.
#[test]
fn a_small_wait_is_answered_on_its_channel_and_a_big_one_is_polled() {
    let stack = Stack::new();
    stack.ok(&["mq", "setup"]);
    let waiting = stack.provision("x1").image("i").timeout(60.0).background();
    let reply_to = reply_to_of_next(&stack.prov).expect("the message has a reply_to");
    // The broker's address of the waiting publisher's channel.
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "a direct reply-to: {reply_to}"
    );
    stack.start(&[]);
    let ran = waiting.finish();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("all 1 jobs succeeded"),
        "{}",
        ran.stderr
    );
    stack.server_stop();

    let big = stack
        .provision("z[1-101]")
        .image("i")
        .timeout(60.0)
        .background();
    assert_eq!(
        reply_to_of_next(&stack.prov),
        None,
        "over 100 jobs: no replies asked for"
    );
    stack.start(&[]);
    let ran = big.finish();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
}

//! Jobs that are never lost: states and history in the real store, failures, retries, kill -9.

mod common;

use std::time::Duration;

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

fn history(stack: &Stack, id: &str) -> (serde_json::Value, Vec<String>) {
    let job: serde_json::Value =
        serde_json::from_str(&stack.ok(&["jobs", "show", id, "--json"])).expect("json");
    let states = job["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["state"].as_str().unwrap_or_default().to_string())
        .collect();
    (job, states)
}

/// Launch and provision with --wait; every job ends SUCCESS with every transition recorded.
fn every_job_is_final_with_complete_history(stack: &Stack) {
    stack.ok(&["queue", "start"]);
    let launched = stack.publish(&[
        "launch",
        "--server",
        "sierra_openstack_grizzly",
        "--recipe",
        "Slurm Cluster",
        "--hosts",
        "vm[1-5]",
        "--wait",
    ]);
    let provisioned = stack.publish(&[
        "provision",
        "--hosts",
        "h[1-5]",
        "--image",
        "debian-12",
        "--wait",
    ]);
    assert_eq!((launched.len(), provisioned.len()), (5, 5));

    let all = jobs(stack);
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
        let (job, states) = history(stack, id);
        assert_eq!(states, LAUNCH_STATES, "{id}");
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
        let (job, states) = history(stack, id);
        assert_eq!(states, PROVISION_STATES, "{id}");
        assert!(job["worker"].as_str().is_some_and(|w| w.starts_with('p')));
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

const BROKEN_RECIPE: &str = r#"
[recipes.Hadoop]
description = "works"
[recipes.Broken]
description = "always fails to deploy"
fail = true
"#;

#[test]
fn wait_exits_non_zero_naming_failed_jobs_and_on_timeout() {
    let stack = Stack::with(Options {
        extra: BROKEN_RECIPE.into(),
        ..Options::default()
    });
    // No workers yet: the wait cannot end in time.
    let out = stack.cm(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--wait",
        "--timeout",
        "0.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");

    stack.ok(&["queue", "start"]);
    let out = stack.cm(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Broken",
        "--hosts",
        "b[1-2]",
        "--wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
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
    stack.ok(&["queue", "start", "p1"]);
    let out = stack.ok(&[
        "call",
        "cm.provision",
        "--args",
        r#"["h1", "ubuntu"]"#,
        "--wait",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let result: serde_json::Value = serde_json::from_str(lines[1]).expect("a JSON result");
    assert_eq!(result["host"], "h1");
    let (row, _) = history(&stack, lines[0]);
    assert_eq!(row["state"], "SUCCESS");
    assert_eq!(row["queue"], stack.prov.as_str());

    let kw = stack.ok(&[
        "call",
        "cm.provision",
        "--kwargs",
        r#"{"host": "h2", "image": "i"}"#,
    ]);
    assert_eq!(kw.lines().count(), 1, "{kw}");

    for (args, why) in [
        (vec!["call", "cm.nope"], "unknown task"),
        (
            vec!["call", "cm.provision", "--args", "[1,"],
            "is not a JSON list",
        ),
        (
            vec!["call", "cm.provision", "--kwargs", "[]"],
            "is not a JSON object",
        ),
        (
            vec![
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
            vec!["call", "cm.provision", "--args", r#"["h"]"#],
            "missing required argument 'image'",
        ),
    ] {
        let out = stack.cm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    stack.ok(&["server", "stop"]);
}

#[test]
fn a_failing_job_is_retried_with_backoff_then_fails() {
    let stack = Stack::with(Options {
        extra: BROKEN_RECIPE.into(),
        launch_queue_extra: "retries = 2\nretry_backoff_seconds = 0.05".into(),
        ..Options::default()
    });
    stack.ok(&["queue", "start", "l1", "l2"]);
    let out = stack.cm(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Broken",
        "--wait",
        "--timeout",
        "30",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (job, states) = history(&stack, &id);
    assert_eq!(job["state"], "FAILURE");
    assert_eq!(job["retries"], 2);
    assert_eq!(
        states.iter().filter(|s| *s == "RETRY").count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "RECEIVED").count(),
        3,
        "{states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("FAILURE"));
}

#[test]
fn kill_9_of_a_busy_worker_loses_no_job() {
    let stack = Stack::with(Options {
        step_seconds: (0.002, 0.004),
        ..Options::default()
    });
    stack.ok(&["queue", "start", "l1", "l2"]);
    let ids = stack.publish(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Ganglia",
        "--hosts",
        "vm[1-500]",
    ]);
    assert_eq!(ids.len(), 500);
    let victim = stack.pid_of("l1");
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
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");

    eventually(Duration::from_secs(60), "all 500 jobs to be final", || {
        let all = jobs(&stack);
        all.len() == 500 && all.iter().all(|j| j["state"] == "SUCCESS")
    });
    let all = jobs(&stack);
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
        let id = job["id"].as_str().expect("id");
        let (_, states) = history(&stack, id);
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

fn publish_raw(queue: &str, body: &[u8], headers: Option<&[(&str, &str)]>) {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let mut props = lapin::BasicProperties::default().with_content_type("application/json".into());
    if let Some(hs) = headers {
        let mut table = FieldTable::default();
        for (k, v) in hs {
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
    stack.ok(&["queue", "start", "l1"]);
    let task = |name: &'static str| Some(vec![("task", name), ("id", "poison-id")]);
    publish_raw(
        &stack.launch,
        b"this is not json",
        task("cm.launch").as_deref(),
    );
    publish_raw(&stack.launch, br#"{"a": 1}"#, task("cm.launch").as_deref());
    publish_raw(
        &stack.launch,
        br#"[[], {}, {}]"#,
        task("cm.nope").as_deref(),
    );
    publish_raw(&stack.launch, br#"[[], {}, {}]"#, None);
    let huge = format!(r#"[["{}", "ubuntu"], {{}}, {{}}]"#, "h".repeat(2 << 20));
    publish_raw(
        &stack.launch,
        huge.as_bytes(),
        task("cm.provision").as_deref(),
    );
    // A job whose arguments do not fit is no poison: it ends FAILURE naming the mismatch.
    publish_raw(
        &stack.launch,
        br#"[[], {"server": [5]}, {}]"#,
        Some(&[("task", "cm.launch"), ("id", "unfit-id")]),
    );

    // A good job after the poison still runs.
    stack.ok(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Nagios",
        "--wait",
        "--timeout",
        "20",
    ]);
    let dead = format!("{}.dead", stack.launch);
    eventually(Duration::from_secs(10), "5 dead letters", || {
        queue_depth(&dead) == 5
    });
    let (unfit, states) = history(&stack, "unfit-id");
    assert_eq!(unfit["state"], "FAILURE", "{unfit}");
    assert!(
        unfit["error"]
            .as_str()
            .is_some_and(|e| e.contains("cm.launch() argument 'server' must be a string")),
        "{unfit}"
    );
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
    stack.ok(&["queue", "start"]);
    stack.ok(&[
        "provision",
        "--hosts",
        "h[1-3]",
        "--image",
        "ubuntu",
        "--wait",
    ]);
    let out = stack.cm(&["db", "reset"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "reset without --yes and no terminal must refuse"
    );
    assert_eq!(jobs(&stack).len(), 3);
    let out = stack.ok(&["db", "reset", "--yes"]);
    assert!(out.contains("removed 3 job records"), "{out}");
    assert!(jobs(&stack).is_empty());
}

fn celery_python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.venv/bin/python")
}

#[test]
fn a_python_celery_client_hands_jobs_to_cm_and_gets_results_over_rpc() {
    let python = celery_python();
    assert!(
        python.exists(),
        "{} missing: `make test` installs Celery (scripts/ensure-celery-venv.sh)",
        python.display()
    );
    let stack = Stack::new();
    stack.ok(&["queue", "start"]);
    let script = format!(
        r#"
from celery import Celery
app = Celery("client", broker="{broker}".replace("%2f", "%2F"), backend="rpc://")
app.conf.broker_connection_retry_on_startup = False
launch = app.send_task("cm.launch", kwargs={{"server": "india_openstack_essex", "recipe": "Hadoop", "kind": "vm", "hosts": "c1"}}, queue="{launch}")
prov = app.send_task("cm.provision", args=["c2", "ubuntu"], queue="{prov}")
print(launch.id)
print(prov.id)
print(launch.get(timeout=30)["state"])
print(prov.get(timeout=30)["state"])
bad = app.send_task("cm.launch", kwargs={{"server": "nowhere", "recipe": "Hadoop"}}, queue="{launch}")
print(bad.id)
try:
    bad.get(timeout=30)
    print("no error")
except Exception as e:
    print("error", type(e).__name__, e)
"#,
        broker = broker_url(),
        launch = stack.launch,
        prov = stack.prov
    );
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[2..4], ["active", "AVAILABLE"], "{stdout}");
    assert!(
        lines[5].starts_with("error") && lines[5].contains("unknown server"),
        "{stdout}"
    );

    for (id, task, state) in [
        (lines[0], "cm.launch", "SUCCESS"),
        (lines[1], "cm.provision", "SUCCESS"),
        (lines[4], "cm.launch", "FAILURE"),
    ] {
        let (job, states) = history(&stack, id);
        assert_eq!(job["task"], task);
        assert_eq!(job["state"], state, "{job}");
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
    runtime().block_on(async {
        let conn =
            lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect");
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
        let _ = conn.close(200, "".into()).await;
        reply_to
    })
}

/// `cm provision --hosts HOSTS --image i --wait`, started and left running.
fn provision_waiting(stack: &Stack, hosts: &str) -> std::process::Child {
    std::process::Command::new(cm_bin())
        .arg("--config")
        .arg(&stack.config)
        .args([
            "provision",
            "--hosts",
            hosts,
            "--image",
            "i",
            "--wait",
            "--timeout",
            "60",
        ])
        .env_remove("CM_BROKER_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cm provision --wait")
}

/// A small `--wait` has its jobs answered on its own channel (RabbitMQ's direct reply-to),
/// which the worker does once the final state is stored; a big one (over 100 jobs) is polled
/// and costs the workers no replies.
#[test]
fn a_small_wait_is_answered_on_its_channel_and_a_big_one_is_polled() {
    let stack = Stack::new();
    stack.ok(&["mq", "setup"]);
    let waiting = provision_waiting(&stack, "x1");
    let reply_to = reply_to_of_next(&stack.prov).expect("the message has a reply_to");
    // The broker's address of the waiting publisher's channel.
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "a direct reply-to: {reply_to}"
    );
    stack.ok(&["queue", "start"]);
    let out = waiting.wait_with_output().expect("cm provision --wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("all 1 jobs succeeded"));
    stack.ok(&["server", "stop"]);

    let big = provision_waiting(&stack, "z[1-101]");
    assert_eq!(
        reply_to_of_next(&stack.prov),
        None,
        "over 100 jobs: no replies asked for"
    );
    stack.ok(&["queue", "start"]);
    let out = big.wait_with_output().expect("the big --wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

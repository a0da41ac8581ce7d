//! Celery's flow-control methods from the real `celery control` (bench/.venv) against real cm
//! workers: `cancel_consumer` and `add_consumer` of the worker's own queue pause and resume it
//! through the store's rows, as `cm queue pause|resume` do, so the pause outlasts a restart
//! (Celery's does not); `pool_grow`, `pool_shrink` and `autoscale` change its job slots without
//! a restart. The stack has a node host of its own, so its node names are nobody else's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::celery::{control, kombu_url, venv_bin};
use common::*;
use serde_json::{json, Value};

/// `cm queue status WORKER --json`'s row.
fn status_of(stack: &Stack, worker: &str) -> Value {
    stack.status(&[worker])[0].clone()
}

#[test]
fn celery_control_pauses_resumes_and_resizes_a_cm_worker_through_the_store() {
    let host = unique("cfhost").replace('_', "-");
    let stack = Stack::with(Options {
        node_host: Some(host.clone()),
        own_queue: Some(OwnQueue {
            workers: &["c1"],
            keys: "concurrency = 1".into(),
            tasks: String::new(),
        }),
        ..Options::default()
    });
    let q = stack.queue().to_string();
    let node = format!("c1@{host}");
    stack.start(&["c1"]);

    assert_eq!(
        control(&node, &["cancel_consumer", &q]),
        json!({"ok": format!("no longer consuming from {q}")})
    );
    eventually(Duration::from_secs(3), "c1 paused", || {
        status_of(&stack, "c1")["state"] == "paused"
    });
    let listed = stack.ok(&["queue", "status", "c1"]);
    assert!(listed.contains("paused"), "{listed}");
    // A queue it does not consume is refused, naming its own.
    let other = control(&node, &["add_consumer", "someone-elses-queue"]);
    assert!(
        other["error"].as_str().is_some_and(|e| e.contains(&q)),
        "{other}"
    );

    // Kept in the store: a restarted worker is still paused, and takes nothing.
    stack.ok(&["queue", "restart", "c1"]);
    assert_eq!(status_of(&stack, "c1")["state"], "paused");
    let id = stack
        .call("cm.provision")
        .queue(&q)
        .args(r#"["h1", "ubuntu"]"#)
        .id();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        stack.job(&id)["state"],
        "PENDING",
        "paused across a restart"
    );
    assert_eq!(queue_depth(&q), 1);

    assert_eq!(
        control(&node, &["add_consumer", &q]),
        json!({"ok": format!("add consumer {q}")})
    );
    eventually(
        Duration::from_secs(20),
        "the job after add_consumer",
        || stack.job(&id)["state"] == "SUCCESS",
    );
    assert_eq!(
        control(&node, &["add_consumer", &q]),
        json!({"ok": format!("already consuming from {q}")})
    );

    let slots = |n: u16| {
        eventually(
            Duration::from_secs(3),
            &format!("c1 at {n} slot(s)"),
            || {
                let s = status_of(&stack, "c1");
                s["concurrency"] == n && s["desired_concurrency"] == n
            },
        );
    };
    assert_eq!(
        control(&node, &["pool_grow", "2"]),
        json!({"ok": "pool will grow"})
    );
    slots(3);
    assert_eq!(
        control(&node, &["pool_shrink", "1"]),
        json!({"ok": "pool will shrink"})
    );
    slots(2);
    assert_eq!(
        control(&node, &["autoscale", "5", "1"]),
        json!({"ok": "autoscale now max=5 min=1"})
    );
    slots(5);
    let stats = Command::new(venv_bin("celery"))
        .arg("-b")
        .arg(kombu_url())
        .args(["inspect", "stats", "--json", "-d", &node, "-t", "10"])
        .output()
        .expect("run celery");
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    assert_eq!(stats[&node]["pool"]["max-concurrency"], 5, "{stats}");
    let too_small = control(&node, &["pool_shrink", "5"]);
    assert!(too_small["error"].is_string(), "{too_small}");
    // Kept too: a restart keeps the size.
    stack.ok(&["queue", "restart", "c1"]);
    slots(5);
    // `cm queue scale` of every host overrides what one worker was told.
    stack.ok(&["queue", "scale", &q, "--concurrency", "2"]);
    slots(2);
}

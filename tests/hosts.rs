//! Several hosts on one broker and one store: two configs with their own node names and pid dirs.

mod common;

use std::collections::BTreeSet;

use common::*;

fn hosts_in_status(stack: &Stack) -> (usize, BTreeSet<String>) {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&stack.ok(&["queue", "status", "--all", "--json"])).expect("json");
    let hosts = all
        .iter()
        .filter_map(|w| w["host"].as_str().map(String::from))
        .collect();
    (all.len(), hosts)
}

fn worker_hosts(stack: &Stack) -> BTreeSet<String> {
    jobs(stack)
        .iter()
        .filter_map(|j| {
            j["worker"]
                .as_str()
                .and_then(|w| w.split('@').nth(1))
                .map(String::from)
        })
        .collect()
}

#[test]
fn two_hosts_share_the_queues_and_one_stops_while_the_other_serves() {
    let db = PgDatabase::new();
    let a = Stack::with(Options {
        store_url: Some(db.url.clone()),
        step_seconds: (0.01, 0.01),
        worker_extra: "allow_root = true\nnode_host = \"host-a\"".into(),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    a.ok(&["queue", "start"]);
    b.ok(&["queue", "start"]);

    let (count, hosts) = hosts_in_status(&a);
    assert_eq!(count, 8, "status --all must list both hosts' workers");
    assert_eq!(
        hosts,
        BTreeSet::from(["host-a".to_string(), "host-b".to_string()])
    );
    // Each names the broker node it is connected to, its password hidden.
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&a.ok(&["queue", "status", "--all", "--json"])).expect("json");
    for w in &all {
        let broker = w["broker"].as_str().unwrap_or("");
        assert!(
            broker.starts_with("amqp://") && !broker.contains("guest:guest"),
            "{w}"
        );
    }
    assert!(a.ok(&["queue", "status", "--all"]).contains("BROKER"));

    a.ok(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--hosts",
        "vm[1-40]",
        "--wait",
        "--timeout",
        "60",
    ]);
    assert_eq!(
        worker_hosts(&a),
        BTreeSet::from(["host-a".to_string(), "host-b".to_string()]),
        "jobs did not spread over both hosts"
    );

    a.ok(&["server", "stop"]);
    let (count, hosts) = hosts_in_status(&b);
    assert_eq!((count, hosts), (4, BTreeSet::from(["host-b".to_string()])));
    a.ok(&["db", "reset", "--yes"]);
    a.ok(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--hosts",
        "vm[1-10]",
        "--wait",
        "--timeout",
        "60",
    ]);
    assert_eq!(worker_hosts(&b), BTreeSet::from(["host-b".to_string()]));
    drop(b);
    drop(a);
}

#[test]
fn quorum_queues_work_end_to_end() {
    let stack = Stack::new();
    // Turn both queues quorum: a table key after `concurrency`.
    let text = std::fs::read_to_string(&stack.config)
        .expect("config")
        .replace(
            "concurrency = 1\n",
            "concurrency = 1\nqueue_type = \"quorum\"\n",
        );
    std::fs::write(&stack.config, text).expect("config");
    stack.ok(&["queue", "start"]);
    stack.ok(&[
        "provision",
        "--hosts",
        "h[1-4]",
        "--image",
        "ubuntu",
        "--wait",
        "--timeout",
        "30",
    ]);
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "type",
            "--no-table-headers",
            "--quiet",
        ])
        .output()
        .expect("rabbitmqctl");
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("{}\t", stack.prov)))
        .unwrap_or_default();
    assert!(
        line.ends_with("quorum"),
        "queue {} is not quorum: {line:?}",
        stack.prov
    );
}

#[test]
fn a_bad_queue_type_is_a_config_error() {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config)
        .expect("config")
        .replacen(
            "concurrency = 1\n",
            "concurrency = 1\nqueue_type = \"qourum\"\n",
            1,
        );
    std::fs::write(&stack.config, text).expect("config");
    let out = stack.cm(&["queue", "status"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_type must be"));
}

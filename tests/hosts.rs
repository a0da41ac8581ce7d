//! Several hosts on one broker and one store: two configs with their own node names and pid dirs.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The hosts in `names`, as a set.
fn hosts(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// `cm queue status --all --json`: every worker of every host, as the broker reaches them.
fn status_of_all(stack: &Stack) -> Vec<serde_json::Value> {
    serde_json::from_str(&stack.ok(&["queue", "status", "--all", "--json"])).expect("json")
}

fn hosts_in_status(stack: &Stack) -> (usize, BTreeSet<String>) {
    let all = status_of_all(stack);
    let hosts = all
        .iter()
        .filter_map(|w| w["host"].as_str().map(String::from))
        .collect();
    (all.len(), hosts)
}

fn worker_hosts(stack: &Stack) -> BTreeSet<String> {
    stack
        .jobs()
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
        node_host: Some("host-a".into()),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    a.start(&[]);
    b.start(&[]);

    let (count, seen) = hosts_in_status(&a);
    assert_eq!(count, 8, "status --all must list both hosts' workers");
    assert_eq!(seen, hosts(&["host-a", "host-b"]));
    // Each names the broker node it is connected to, its password hidden.
    for w in &status_of_all(&a) {
        let broker = w["broker"].as_str().unwrap_or("");
        assert!(
            broker.starts_with("amqp://") && !broker.contains("guest:guest"),
            "{w}"
        );
    }
    assert!(a.ok(&["queue", "status", "--all"]).contains("BROKER"));

    a.launch().hosts("vm[1-40]").timeout(60.0).ids();
    assert_eq!(
        worker_hosts(&a),
        hosts(&["host-a", "host-b"]),
        "jobs did not spread over both hosts"
    );

    a.server_stop();
    assert_eq!(hosts_in_status(&b), (4, hosts(&["host-b"])));
    a.ok(&["db", "reset", "--yes"]);
    a.launch().hosts("vm[1-10]").timeout(60.0).ids();
    assert_eq!(worker_hosts(&b), hosts(&["host-b"]));
    drop(b);
    drop(a);
}

#[test]
fn quorum_queues_work_end_to_end() {
    let stack = Stack::with(Options {
        queue_keys: "queue_type = \"quorum\"".into(),
        ..Options::default()
    });
    stack.start(&[]);
    stack.provision("h[1-4]").timeout(30.0).ids();
    let kind = queue_info(&stack.prov, "type", None);
    assert_eq!(
        kind.as_deref(),
        Some("quorum"),
        "queue {} is not quorum",
        stack.prov
    );
}

#[test]
fn a_bad_queue_type_is_a_config_error() {
    let stack = Stack::with(Options {
        queue_keys: "queue_type = \"qourum\"".into(),
        ..Options::default()
    });
    let stderr = stack.fails(&["queue", "status"], 78);
    assert!(stderr.contains("queue_type must be"), "{stderr}");
}

//! A job longer than the broker's `consumer_timeout`, against a RabbitMQ node of the test's
//! own whose config sets `consumer_timeout = 5000` (scripts/rabbitmq-node.sh): it must run once
//! and end final. RabbitMQ checks the timeout about once a minute, so the job runs 75 s: this
//! file is `make test`'s slow group, run alone after the rest (`--ignored`).

mod common;

use std::time::Duration;

use common::node::{free_port_pair, Node};
use common::*;

#[test]
#[ignore = "75 s against a broker of its own: make test runs it apart"]
fn a_job_longer_than_the_consumer_timeout_runs_once_and_ends_final() {
    let node = Node::start(
        &unique("cm_long"),
        free_port_pair(&["127.0.0.1"]),
        &["consumer_timeout = 5000"],
    );
    let stack = Stack::with(Options {
        broker: node.url.clone(),
        worker_keys: "lease_after_seconds = 2\nlease_seconds = 6".into(),
        own_queue: Some(OwnQueue {
            workers: &["c1", "c2"],
            keys: String::new(),
            tasks: r#"[tasks."t.long"]
command = ["/bin/sh", "-c", "echo $CM_WORKER >> {dir}/runs; sleep 75"]
"#
            .into(),
        }),
        ..Options::default()
    });
    stack.start(&["c1", "c2"]);
    let id = stack.call("t.long").timeout(150.0).id();
    let job = stack.job(&id);
    assert_eq!(job["state"], "SUCCESS", "{job}");
    assert_eq!(job["deliveries"], 1, "{job}");
    let ran = std::fs::read_to_string(stack.file("runs")).expect("runs");
    assert_eq!(ran.lines().count(), 1, "it ran more than once: {ran}");
    for w in ["c1", "c2"] {
        let log = stack.log(w);
        assert!(
            !log.contains("lost the broker connection"),
            "{w} lost its channel to the consumer timeout:\n{log}"
        );
    }
    // Both workers still consume: a timed-out channel would have cost one its consumer.
    let status = stack.ok(&["queue", "status", "--json"]);
    assert_eq!(status.matches("\"running\"").count(), 2, "{status}");
    eventually(Duration::from_secs(5), "the stack to stop", || {
        stack.cm(&["server", "stop"]).code == Some(0)
    });
}

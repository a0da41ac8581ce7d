//! A real broker restart (`rabbitmqctl stop_app` / `start_app`). It stops the shared RabbitMQ, so
//! it is ignored in the parallel suite and run alone afterwards by `make test`.

mod common;

use std::time::Duration;

use common::*;

#[test]
#[ignore = "stops the shared broker; `make test` runs it alone after the suite"]
fn workers_ride_out_a_broker_restart_and_lose_no_job() {
    let stack = Stack::with(Options {
        step_seconds: (0.01, 0.02),
        ..Options::default()
    });
    stack.start(&["l1", "l2"]);
    let pids = stack.worker_pids();
    let ids = stack.launch().hosts("vm[1-100]").ids();
    eventually(Duration::from_secs(30), "some jobs done", || {
        stack.successes(&["l1", "l2"]).len() >= 5
    });

    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a worker exited while the broker was down"
    );
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    eventually(Duration::from_secs(90), "all 100 jobs to succeed", || {
        stack.all_succeeded(ids.len())
    });
    assert_eq!(stack.worker_pids(), pids);
    let logs = stack.logs(&["l1", "l2"]);
    assert!(
        logs.contains("lost the broker connection") && logs.contains("reconnected to the broker"),
        "{logs}"
    );
}

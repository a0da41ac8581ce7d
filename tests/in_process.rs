//! A worker run in-process (`cm::worker::serve`) inside the test's own tokio runtime, against
//! the real broker and a temp SQLite store: no pid file, no readiness pipe, no signal handler;
//! it returns once its warm shutdown is done.

mod common;

use std::time::Duration;

use common::{eventually, queue_depth, Options, Stack};

/// Job `id`'s state in the stack's store.
fn state(stack: &Stack, id: &str) -> String {
    stack
        .jobs()
        .iter()
        .find(|j| j["id"] == id)
        .and_then(|j| j["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn launch_one(stack: &Stack, host: &str) -> String {
    stack.launch().hosts(host).id()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn an_in_process_worker_runs_jobs_end_to_end_and_shuts_down_warmly() {
    // Steps long enough to catch the second job running when the shutdown is asked.
    let stack = Stack::with(Options {
        step_seconds: (0.4, 0.4),
        ..Options::default()
    });
    let cfg = cm::config::Config::load(&stack.config).expect("the stack's config");
    let runtime = runtime();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = runtime.spawn(async move {
        cm::worker::serve(&cfg, "l1", async {
            let _ = stopped.await;
        })
        .await
    });

    let first = launch_one(&stack, "vm1");
    eventually(Duration::from_secs(30), "the first job to succeed", || {
        state(&stack, &first) == "SUCCESS"
    });
    assert!(
        !stack.pid_file("l1").exists(),
        "an in-process worker writes no pid file"
    );

    let second = launch_one(&stack, "vm2");
    eventually(Duration::from_secs(30), "the second job to run", || {
        ["STARTED", "running", "deploy", "active"].contains(&state(&stack, &second).as_str())
    });
    stop.send(())
        .expect("the worker still listens for its shutdown");
    let served = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), worker).await })
        .expect("serve returns within the stop grace")
        .expect("serve did not panic");
    served.expect("a warm shutdown ends serve with Ok");
    assert_eq!(
        state(&stack, &second),
        "SUCCESS",
        "the job running at the shutdown finished"
    );
    assert_eq!(
        queue_depth(&stack.launch),
        0,
        "its message was acked, not returned"
    );
}

#[test]
fn an_in_process_worker_that_cannot_start_returns_the_error() {
    let stack = Stack::with(Options {
        broker: common::dead_broker_url(),
        ..Options::default()
    });
    let cfg = cm::config::Config::load(&stack.config).expect("the stack's config");
    let runtime = runtime();
    let never = std::future::pending::<()>();
    let unknown = runtime
        .block_on(cm::worker::serve(&cfg, "nobody", never))
        .expect_err("no worker is named nobody");
    assert!(unknown.to_string().contains("nobody"), "{unknown:#}");
    // The first session's failure is serve's: it returns, it does not retry for ever.
    let unreachable = runtime
        .block_on(async {
            let never = std::future::pending::<()>();
            tokio::time::timeout(
                Duration::from_secs(30),
                cm::worker::serve(&cfg, "l1", never),
            )
            .await
        })
        .expect("serve gives up on an unreachable broker")
        .expect_err("no broker listens there");
    assert!(
        format!("{unreachable:#}").contains("127.0.0.1"),
        "{unreachable:#}"
    );
}

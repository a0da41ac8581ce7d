//! A task's retry policy (issue 31) on a real worker: the attempts' start times read from the
//! store show the backoff doubling and capped by `retry_max_delay` (lower bounds, and upper
//! bounds only generous ones); `retry_on_exit` retries the exit codes it lists and fails any
//! other at once. Each wait is held in the store (SCHEDULED), not by the worker.

mod common;

use common::*;

/// `t.flaky` always exits 75: 4 retries, waits 0.5, 1, 2 → 1.5, 4 → 1.5 s.
/// `t.exit CODE` exits CODE: only 75 retries, twice, with no wait. `t.later` retries in 60 s.
const TASKS: &str = r#"[tasks."t.flaky"]
command = ["/bin/sh", "-c", "exit 75"]
retries = 4
retry_backoff = 0.5
retry_max_delay = 1.5

[tasks."t.exit"]
command = ["/bin/sh", "-c", "exit $1", "sh", "{code}"]
params = ["code"]
retries = 2
retry_backoff = 0
retry_on_exit = [75, 111]

[tasks."t.later"]
command = ["/bin/sh", "-c", "exit 75"]
retries = 1
retry_backoff = 60
"#;

fn stack() -> Stack {
    let stack = Stack::with(Options {
        own_queue: Some(OwnQueue::commands(TASKS)),
        ..Options::default()
    });
    stack.start(&["c1"]);
    stack
}

/// When each attempt of job `id` started (ms since the epoch), from its history in the store.
fn starts(stack: &Stack, id: &str) -> Vec<i64> {
    stack.show(id)["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["state"] == "STARTED")
        .filter_map(|e| e["at_ms"].as_i64())
        .collect()
}

/// `cm call TASK --args ARGS --wait`: the job ends FAILURE (exit 1); its id.
fn call_failing(stack: &Stack, task: &str, args: &str) -> String {
    let ran = stack.call(task).args(args).timeout(60.0).run();
    assert_eq!(ran.code, Some(1), "{ran:?}");
    ran.stdout.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_backoff_doubles_and_is_capped_by_retry_max_delay() {
    let stack = stack();
    let id = call_failing(&stack, "t.flaky", "[]");
    let job = stack.show(&id);
    assert_eq!(job["state"], "FAILURE", "{job}");
    assert_eq!(job["retries"], 4, "{job}");
    let at = starts(&stack, &id);
    assert_eq!(at.len(), 5, "one start per attempt: {at:?}");
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // At least the wait: 0.5, 1, then 2 and 4 capped at 1.5.
    for (gap, least) in gaps.iter().zip([500, 1_000, 1_500, 1_500]) {
        assert!(*gap >= least, "{gaps:?}");
    }
    // Capped: well under the 4 s the doubling alone would wait.
    assert!(gaps[3] < 3_500, "{gaps:?}");
    // Each wait was the store's: SCHEDULED between the attempts.
    let history = stack.history(&id);
    assert!(
        history.iter().filter(|s| *s == "SCHEDULED").count() >= 3,
        "{history:?}"
    );
    stack.server_stop();
}

#[test]
fn retry_on_exit_retries_the_listed_codes_and_fails_others_at_once() {
    let stack = stack();
    let listed = call_failing(&stack, "t.exit", "[75]");
    let job = stack.show(&listed);
    assert_eq!(job["retries"], 2, "{job}");
    assert_eq!(starts(&stack, &listed).len(), 3);
    assert!(job["error"]
        .as_str()
        .unwrap_or_default()
        .contains("exit status 75"));

    let other = call_failing(&stack, "t.exit", "[1]");
    let job = stack.show(&other);
    assert_eq!(job["retries"], 0, "{job}");
    assert_eq!(starts(&stack, &other).len(), 1);
    assert!(!stack.history(&other).iter().any(|s| s == "RETRY"));
    stack.server_stop();
}

#[test]
fn jobs_show_tells_the_attempt_and_the_next_try_of_a_waiting_retry() {
    let stack = stack();
    let id = stack.call("t.later").id();
    eventually(
        std::time::Duration::from_secs(30),
        "the retry to wait in the store",
        || stack.job(&id)["state"] == "SCHEDULED",
    );
    let shown = stack.ok(&["jobs", "show", &id]);
    assert!(shown.contains("retries 1  attempt 2"), "{shown}");
    assert!(shown.contains("next try "), "{shown}");
    // Its wait is the store's: a revoke ends it at once.
    stack.ok(&["jobs", "revoke", &id]);
    assert_eq!(stack.job(&id)["state"], "REVOKED");
    stack.server_stop();
}

//! Operators' rate limits (issue 31), kept in the store over the config's `rate_limit`:
//! set by the real `celery control rate_limit` (bench/.venv) on a task the config leaves
//! unlimited, and by `cm tasks rate` on PostgreSQL with two hosts' configs, over the config's
//! own rate. Real workers, broker, binary and commands; the starts are the store's.

mod common;

use std::time::Duration;

use common::celery::control;
use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);

fn own(workers: &'static [&'static str], tasks: &str) -> OwnQueue {
    OwnQueue {
        workers,
        keys: "concurrency = 2".into(),
        tasks: tasks.into(),
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

fn started(job: &Value) -> i64 {
    job["started_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("started_ms of {job}"))
}

/// Waits until the store holds `n` jobs, every one SUCCESS (none lost), and gives them.
fn all_succeed(stack: &Stack, n: usize) -> Vec<Value> {
    eventually_some(LONG, &format!("{n} jobs SUCCESS"), || {
        let jobs = stack.jobs();
        (jobs.len() == n && jobs.iter().all(|j| j["state"] == "SUCCESS")).then_some(jobs)
    })
}

/// A job held THROTTLED now, as `cm jobs show` prints it (its history's THROTTLED row says
/// why; "waits for ..." too while no releaser has granted it yet).
fn a_held_job(stack: &Stack) -> String {
    let id = eventually_some(Duration::from_secs(10), "a THROTTLED job", || {
        stack
            .jobs()
            .into_iter()
            .find(|j| j["state"] == "THROTTLED")
            .and_then(|j| j["id"].as_str().map(String::from))
    });
    stack.ok(&["jobs", "show", &id])
}

/// Checks the run of `jobs` whose limit was lifted at `lifted_ms`: the starts before then kept
/// `per_second` (± 1 in each whole second after the first), and the rest, at least ten (at the
/// limit, five seconds' worth or more), all started within two seconds of the lift.
fn held_then_released(jobs: &[Value], per_second: usize, lifted_ms: i64) {
    let mut starts: Vec<i64> = jobs.iter().map(started).collect();
    starts.sort_unstable();
    let first = starts[0];
    let limited: Vec<i64> = starts.iter().copied().filter(|&s| s < lifted_ms).collect();
    let seconds = usize::try_from((lifted_ms - first) / 1000).unwrap_or(0);
    assert!(seconds >= 3, "limited for only {seconds} s: {starts:?}");
    let mut per = vec![0usize; seconds];
    for s in &limited {
        if let Some(n) = per.get_mut(usize::try_from((s - first) / 1000).unwrap_or(usize::MAX)) {
            *n += 1;
        }
    }
    // The first second may start one interval's catch-up more: an idle rate lets the starts
    // of one interval go at once (`store::flow::take_rate`), as the config's rate does.
    let within = (per_second - 1)..=(per_second + 1);
    assert!(
        per[0] <= per_second + 2 && per[1..].iter().all(|n| within.contains(n)),
        "starts per second under {per_second}/s: {per:?}"
    );
    let rest: Vec<i64> = starts.iter().copied().filter(|&s| s >= lifted_ms).collect();
    assert!(
        rest.len() >= 10,
        "only {} left when the limit was lifted: {per:?}",
        rest.len()
    );
    let last = rest.iter().max().copied().unwrap_or(lifted_ms);
    assert!(
        last - lifted_ms < 2_000,
        "{} jobs left at the lift took {} ms to start: still limited",
        rest.len(),
        last - lifted_ms
    );
}

#[test]
fn celery_control_rate_limit_holds_every_worker_to_the_rate_then_lifts_it() {
    let host = unique("rohost").replace('_', "-");
    // No rate_limit in the config: the operator's rate alone limits it.
    let tick = "[tasks.\"t.tick\"]\ncommand = [\"/bin/true\"]\n";
    let stack = Stack::with(Options {
        node_host: Some(host.clone()),
        own_queue: Some(own(&["c1", "c2"], tick)),
        ..Options::default()
    });
    stack.start(&["c1", "c2"]);
    let node = format!("c1@{host}");

    assert_eq!(
        control(&node, &["rate_limit", "t.nosuch", "2/s"]),
        json!({"error": "unknown task"})
    );
    let bad = control(&node, &["rate_limit", "t.tick", "2/d"]);
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Invalid rate limit string")),
        "{bad}"
    );
    assert_eq!(
        control(&node, &["rate_limit", "t.tick", "2/s"]),
        json!({"ok": "new rate limit set successfully"})
    );
    let rates = stack.ok(&["tasks", "rates"]);
    assert!(rates.contains("t.tick\t2/s\tset by c1@"), "{rates}");
    // Kept in the store: restarted workers read it before their first job (Celery's is lost).
    stack.ok(&["queue", "restart", "c1", "c2"]);

    let ids = stack.call("t.tick").count(30).ids();
    assert_eq!(ids.len(), 30);
    let shown = a_held_job(&stack);
    assert!(
        shown.contains("THROTTLED")
            && shown.contains("rate limit 2/s of t.tick (set by an operator)"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let lifted = now_ms();
    assert_eq!(
        control(&node, &["rate_limit", "t.tick", "0"]),
        json!({"ok": "rate limit disabled successfully"})
    );
    let jobs = all_succeed(&stack, 30);
    held_then_released(&jobs, 2, lifted);
    let rates = stack.ok(&["tasks", "rates"]);
    assert!(rates.contains("t.tick\toff\t"), "{rates}");
}

#[test]
fn cm_tasks_rate_overrides_the_configs_rate_on_two_hosts_on_postgres() {
    let db = PgDatabase::new();
    // The config's rate is far above the operator's: what holds is the operator's.
    let tick = "[tasks.\"t.tick\"]\ncommand = [\"/bin/true\"]\nrate_limit = \"100/s\"\n";
    let a = Stack::with(Options {
        store_url: Some(db.url.clone()),
        node_host: Some("host-a".into()),
        own_queue: Some(own(&["c1", "c2"], tick)),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    a.start(&["c1", "c2"]);
    b.start(&["c1", "c2"]);

    // A typo changes nothing, and says so.
    let typo = a.cm(&["tasks", "rate", "t.tock", "3/s"]);
    assert_eq!(typo.code, Some(64), "{}", typo.stderr);
    assert!(
        typo.stderr.contains("unknown task \"t.tock\""),
        "{}",
        typo.stderr
    );
    let bad = a.cm(&["tasks", "rate", "t.tick", "3/d"]);
    assert_eq!(bad.code, Some(64), "{}", bad.stderr);

    let said = b.ok(&["tasks", "rate", "t.tick", "3/s"]);
    assert!(said.contains("rate limit 3/s on every host"), "{said}");
    std::thread::sleep(Duration::from_secs(1));
    let ids = a.call("t.tick").count(30).ids();
    assert_eq!(ids.len(), 30);
    let shown = a_held_job(&a);
    assert!(
        shown.contains("THROTTLED")
            && shown.contains("rate limit 3/s of t.tick (set by an operator)"),
        "{shown}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let lifted = now_ms();
    let said = a.ok(&["tasks", "rate", "t.tick", "config"]);
    assert!(said.contains("fabfile.toml's rate limit 100/s"), "{said}");
    let jobs = all_succeed(&a, 30);
    held_then_released(&jobs, 3, lifted);
    let hosts: std::collections::BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j["worker"].as_str()?.split('@').nth(1).map(String::from))
        .collect();
    assert_eq!(hosts.len(), 2, "both hosts ran jobs: {hosts:?}");
    assert!(a
        .ok(&["tasks", "rates"])
        .contains("no operator's rate limits"));
}

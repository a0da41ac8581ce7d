//! `cm logs NAME [-f] [-n LINES]` over a real worker's log.

mod common;

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::*;

#[test]
fn logs_shows_the_success_line_of_a_job() {
    let stack = Stack::new();
    stack.start(&["l1"]);
    let id = stack.launch().timeout(30.0).id();
    let out = stack.ok(&["logs", "l1"]);
    assert!(
        out.lines()
            .any(|l| l.contains(&id) && l.ends_with(": SUCCESS")),
        "no SUCCESS line for {id} in:\n{out}"
    );
    let last = stack.ok(&["logs", "l1", "-n", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert_eq!(last.lines().next(), out.lines().last());
    stack.server_stop();
}

#[test]
fn a_job_final_in_the_store_already_has_its_final_line_in_the_log() {
    // `cm launch --wait` returns once the store says every job is final, and a script then
    // reads the logs. So at any moment, every SUCCESS the store holds must have its line in a
    // log: the test reads the store, then the logs, over and over while two workers run jobs.
    let stack = Stack::new();
    stack.start(&["l1", "l2"]);
    let total = 3000;
    let producer = stack.launch().hosts("i[1-100]").count(30).background();
    let conn = rusqlite::Connection::open_with_flags(
        stack.store_file(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("set a busy timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut looks = 0;
    loop {
        let done: Vec<String> = conn
            .prepare_cached("SELECT id FROM jobs WHERE state = 'SUCCESS'")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .expect("read the store");
        let logs = stack.logs(&["l1", "l2"]);
        let logged: std::collections::HashSet<&str> = logs
            .lines()
            .filter_map(|l| l.strip_suffix(" cm.launch: SUCCESS"))
            .filter_map(|l| l.rsplit(' ').next())
            .collect();
        let missing: Vec<&String> = done
            .iter()
            .filter(|id| !logged.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "SUCCESS in the store, no SUCCESS line in the log (look {looks}): {missing:?}"
        );
        looks += 1;
        if done.len() == total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {total} jobs done",
            done.len()
        );
    }
    let ran = producer.finish();
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(looks > 1, "the jobs were done before the first look");
    stack.server_stop();
}

#[test]
fn logs_of_an_unknown_worker_names_the_known_ones() {
    let stack = Stack::new();
    let stderr = stack.fails(&["logs", "nope"], 64);
    assert!(stderr.contains("unknown worker \"nope\""), "{stderr}");
    assert!(stderr.contains("p1, p2, l1, l2"), "{stderr}");
}

#[test]
fn logs_of_a_worker_that_never_ran_says_how_to_start_it() {
    let stack = Stack::new();
    let stderr = stack.fails(&["logs", "p2"], 1);
    assert!(stderr.contains("cm queue start p2"), "{stderr}");
}

/// `cm logs ... -f` as a child whose stdout lines arrive on a channel.
struct Follower {
    _child: Killed,
    lines: Receiver<String>,
}

impl Follower {
    /// `cm logs NAME -f -n 0`.
    fn start(stack: &Stack, name: &str) -> Self {
        Self::with(stack, &["logs", name, "-f", "-n", "0"])
    }

    /// `cm ARGS`: a following `cm logs`.
    fn with(stack: &Stack, args: &[&str]) -> Self {
        let mut child = Killed(stack.spawn(args));
        let lines = child.lines();
        Self {
            _child: child,
            lines,
        }
    }

    /// `-n 0` starts at the end the follower finds when it opens `log`: lines written before
    /// that go unseen. Appends a line of our own until one comes through.
    fn wait_following(&self, log: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .expect("open the log");
        while std::time::Instant::now() < deadline {
            std::io::Write::write_all(&mut file, b"following now\n").expect("append");
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line.contains("following now") {
                    return;
                }
            }
        }
        panic!(
            "cm logs -f printed nothing of {} within 30 s",
            log.display()
        );
    }

    /// Waits for a line containing all of `needles`.
    fn expect(&self, needles: &[&str]) -> String {
        line_within(&self.lines, Duration::from_secs(30), |line| {
            needles.iter().all(|n| line.contains(n))
        })
        .unwrap_or_else(|seen| {
            panic!(
                "no line with {needles:?} from cm logs -f; saw:\n{}",
                seen.join("\n")
            )
        })
    }
}

#[test]
fn follow_prints_new_lines_and_survives_rotation_and_truncation() {
    let stack = Stack::new();
    stack.start(&["l1"]);
    let follower = Follower::start(&stack, "l1");
    let log = stack.log_file("l1");
    follower.wait_following(&log);
    let id = stack.launch().timeout(30.0).id();
    follower.expect(&[&id, "SUCCESS"]);

    // Rotation: the file moves away and a new one takes its name (what logrotate does).
    std::fs::rename(&log, log.with_extension("log.1")).expect("rotate");
    std::fs::write(&log, "after rotation\n").expect("new log");
    follower.expect(&["after rotation"]);

    // Truncation in place (logrotate's copytruncate), then a line shorter than what was read:
    // the follower must notice the file shrank however late it looks.
    std::fs::write(&log, "").expect("truncate");
    std::fs::write(&log, "cut\n").expect("write");
    follower.expect(&["cut"]);
    stack.server_stop();
}

/// Whether `l1`'s log has a line for job `id` ending in `: STATE`.
fn logged(stack: &Stack, worker: &str, id: &str, state: &str) -> bool {
    let ending = format!(": {state}");
    stack
        .log(worker)
        .lines()
        .any(|l| l.contains(id) && l.ends_with(&ending))
}

#[test]
fn a_running_jobs_lines_reach_the_log_before_it_ends() {
    // Job lines are written in batches (src/joblog.rs); a worker waiting on a slow step must
    // still have written what its job said so far.
    let stack = Stack::with(Options {
        step_seconds: (3.0, 3.0),
        ..Options::default()
    });
    stack.start(&["l1"]);
    let id = stack.launch().id();
    eventually(
        Duration::from_secs(10),
        "the job's first step in the log",
        || logged(&stack, "l1", &id, "running"),
    );
    assert!(
        !logged(&stack, "l1", &id, "SUCCESS"),
        "the job should still be in its first 3 s step:\n{}",
        stack.log("l1")
    );
}

/// `cm logs --job ID` gathers one job's lines from every worker that ran it: here l1, killed
/// mid-job, and l2, which ran the redelivery; oldest first, nothing of other jobs.
#[test]
fn logs_of_one_job_come_from_every_worker_that_ran_it() {
    let stack = Stack::with(Options {
        step_seconds: (1.0, 1.0),
        ..Options::default()
    });
    stack.start(&["l1"]);
    let other = stack.launch().timeout(30.0).id();
    let id = stack.launch().id();
    eventually(Duration::from_secs(20), "l1 to start the job", || {
        logged(&stack, "l1", &id, "running")
    });
    stack.kill9("l1");
    stack.start(&["l2"]);
    eventually(Duration::from_secs(30), "l2 to finish the job", || {
        logged(&stack, "l2", &id, "SUCCESS")
    });
    let out = stack.ok(&["logs", "--job", &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().all(|l| l.contains(&id)), "{out}");
    assert!(!out.contains(&other), "another job's lines:\n{out}");
    let first_l2 = lines.iter().position(|l| l.contains("l2@"));
    let last_l1 = lines.iter().rposition(|l| l.contains("l1@"));
    assert!(
        matches!((last_l1, first_l2), (Some(a), Some(b)) if a < b),
        "l1's lines, then l2's:\n{out}"
    );
    assert!(out.contains("(redelivered)"), "{out}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with(": SUCCESS")),
        "{out}"
    );

    stack.fails(
        &["logs", "--job", "01a23325-0000-7000-8000-000000000000"],
        1,
    );
    stack.server_stop();
}

/// `cm logs --queue Q` merges the queue's workers' logs in time order; `-f` goes on merging.
#[test]
fn a_queues_logs_merge_in_time_order_and_follow() {
    let stack = Stack::new();
    stack.start(&["l1", "l2"]);
    for _ in 0..4 {
        stack.launch().timeout(30.0).id();
    }
    let out = stack.ok(&["logs", "--queue", &stack.launch, "-n", "1000"]);
    let stamps: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split(']').next())
        .collect();
    assert!(stamps.len() > 8, "{out}");
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "not in time order:\n{out}"
    );
    assert!(out.contains("l1@") && out.contains("l2@"), "{out}");

    let follower = Follower::with(&stack, &["logs", "--queue", &stack.launch, "-n", "0", "-f"]);
    follower.wait_following(&stack.log_file("l1"));
    let id = stack.launch().timeout(30.0).id();
    follower.expect(&[&id, "SUCCESS"]);
    drop(follower);
    stack.server_stop();
}

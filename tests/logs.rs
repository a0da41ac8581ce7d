//! `cm logs NAME [-f] [-n LINES]` over a real worker's log.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{cm_bin, Stack};

/// Launches one Hadoop job and returns its id; `wait`: once it is final.
fn launch_one(stack: &Stack, wait: bool) -> String {
    let mut args = vec![
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
    ];
    if wait {
        args.extend(["--wait", "--timeout", "30"]);
    }
    stack
        .publish(&args)
        .into_iter()
        .find(|l| !l.trim().is_empty() && !l.contains(' '))
        .expect("a job id")
}

#[test]
fn logs_shows_the_success_line_of_a_job() {
    let stack = Stack::new();
    stack.ok(&["queue", "start", "l1"]);
    let id = launch_one(&stack, true);
    let out = stack.ok(&["logs", "l1"]);
    assert!(
        out.lines()
            .any(|l| l.contains(&id) && l.ends_with(": SUCCESS")),
        "no SUCCESS line for {id} in:\n{out}"
    );
    let last = stack.ok(&["logs", "l1", "-n", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert_eq!(last.lines().next(), out.lines().last());
    stack.ok(&["server", "stop"]);
}

#[test]
fn a_job_final_in_the_store_already_has_its_final_line_in_the_log() {
    // `cm launch --wait` returns once the store says every job is final, and a script then
    // reads the logs. So at any moment, every SUCCESS the store holds must have its line in a
    // log: the test reads the store, then the logs, over and over while two workers run jobs.
    let stack = Stack::new();
    stack.ok(&["queue", "start", "l1", "l2"]);
    let total = 3000;
    let mut producer = Command::new(cm_bin())
        .arg("--config")
        .arg(&stack.config)
        .args(["launch", "--server", "india_openstack_essex", "--recipe"])
        .args(["Hadoop", "--hosts", "i[1-100]", "--count", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("run cm launch");
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
        let logs = stack.log("l1") + &stack.log("l2");
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
    assert!(producer.wait().expect("cm launch").success());
    assert!(looks > 1, "the jobs were done before the first look");
    stack.ok(&["server", "stop"]);
}

#[test]
fn logs_of_an_unknown_worker_names_the_known_ones() {
    let stack = Stack::new();
    let out = stack.cm(&["logs", "nope"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown worker \"nope\""), "{stderr}");
    assert!(stderr.contains("p1, p2, l1, l2"), "{stderr}");
}

#[test]
fn logs_of_a_worker_that_never_ran_says_how_to_start_it() {
    let stack = Stack::new();
    let out = stack.cm(&["logs", "p2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cm queue start p2"), "{stderr}");
}

/// `cm logs NAME -f` as a child whose stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(stack: &Stack, name: &str) -> Self {
        Self::with(stack, &["logs", name, "-f", "-n", "0"])
    }

    /// `cm ARGS`: a following `cm logs`.
    fn with(stack: &Stack, args: &[&str]) -> Self {
        let mut child = Command::new(cm_bin())
            .arg("--config")
            .arg(&stack.config)
            .args(args)
            .env_remove("CM_CONFIG")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn cm logs -f");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
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
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needles:?} from cm logs -f; saw:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_prints_new_lines_and_survives_rotation_and_truncation() {
    let stack = Stack::new();
    stack.ok(&["queue", "start", "l1"]);
    let follower = Follower::start(&stack, "l1");
    let log = stack.log_file("l1");
    follower.wait_following(&log);
    let id = launch_one(&stack, true);
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
    stack.ok(&["server", "stop"]);
}

#[test]
fn a_running_jobs_lines_reach_the_log_before_it_ends() {
    // Job lines are written in batches (src/joblog.rs); a worker waiting on a slow step must
    // still have written what its job said so far.
    let stack = Stack::with(common::Options {
        step_seconds: (3.0, 3.0),
        ..common::Options::default()
    });
    stack.ok(&["queue", "start", "l1"]);
    let id = launch_one(&stack, false);
    common::eventually(
        Duration::from_secs(10),
        "the job's first step in the log",
        || {
            stack
                .log("l1")
                .lines()
                .any(|l| l.contains(&id) && l.ends_with(": running"))
        },
    );
    let log = stack.log("l1");
    assert!(
        !log.lines()
            .any(|l| l.contains(&id) && l.ends_with(": SUCCESS")),
        "the job should still be in its first 3 s step:\n{log}"
    );
}

/// `cm logs --job ID` gathers one job's lines from every worker that ran it: here l1, killed
/// mid-job, and l2, which ran the redelivery; oldest first, nothing of other jobs.
#[test]
fn logs_of_one_job_come_from_every_worker_that_ran_it() {
    let stack = Stack::with(common::Options {
        step_seconds: (1.0, 1.0),
        ..common::Options::default()
    });
    stack.ok(&["queue", "start", "l1"]);
    let other = launch_one(&stack, true);
    let id = launch_one(&stack, false);
    common::eventually(Duration::from_secs(20), "l1 to start the job", || {
        stack
            .log("l1")
            .contains(&format!("{id} cm.launch: running"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stack.pid_of("l1")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 l1");
    stack.ok(&["queue", "start", "l2"]);
    common::eventually(Duration::from_secs(30), "l2 to finish the job", || {
        stack
            .log("l2")
            .contains(&format!("{id} cm.launch: SUCCESS"))
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

    let missing = stack.cm(&["logs", "--job", "01a23325-0000-7000-8000-000000000000"]);
    assert_eq!(missing.status.code(), Some(1));
    stack.ok(&["server", "stop"]);
}

/// `cm logs --queue Q` merges the queue's workers' logs in time order; `-f` goes on merging.
#[test]
fn a_queues_logs_merge_in_time_order_and_follow() {
    let stack = Stack::new();
    stack.ok(&["queue", "start", "l1", "l2"]);
    for _ in 0..4 {
        launch_one(&stack, true);
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
    let id = launch_one(&stack, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains(&id) && l.ends_with("SUCCESS"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match follower.lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no SUCCESS line for {id} followed; saw {seen:?}"),
        }
    }
    drop(follower);
    stack.ok(&["server", "stop"]);
}

//! The worker lifecycle over the real broker with the real binary: start, jobs, stop, clean.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// A stack whose simulated steps take `seconds` each.
fn slow_stack(seconds: f64) -> Stack {
    Stack::with(Options {
        step_seconds: (seconds, seconds),
        ..Options::default()
    })
}

/// Whether one of `stack`'s launcher logs says `id` (the first job of a batch) reached `state`.
fn launcher_logged(stack: &Stack, id: &str, state: &str) -> bool {
    stack
        .logs(&["l1", "l2"])
        .contains(&format!("{id} cm.launch: {state}"))
}

#[test]
fn start_gives_four_consuming_workers_with_locked_pid_files_and_logs() {
    let stack = Stack::new();
    let out = stack.start(&[]);
    for name in WORKERS {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"));
        assert!(line.ends_with("ready"), "{line}");
        let pid = stack.pid_of(name);
        assert!(line.contains(&format!("pid {pid}")), "{line}");
        assert!(alive(pid), "{name} (pid {pid}) is not running");
        assert!(
            locked(&stack.pid_file(name)),
            "{name}'s pid file is not locked"
        );
        let log = stack.log(name);
        assert!(log.contains("consuming from queue"), "{name} log: {log}");
    }
    assert_eq!(stack.worker_pids().len(), 4);

    let status = stack.status(&[]);
    let rows = status.as_array().expect("array");
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row["state"], "running", "{row}");
        assert!(row["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{row}");
        assert_eq!(row["jobs_done"], 0);
    }
    assert_eq!(rows[0]["queue"], stack.prov.as_str());
}

#[test]
fn jobs_run_exactly_once_and_spread_over_the_queue_workers() {
    let stack = Stack::new();
    stack.start(&[]);
    let launched = stack.launch().hosts("vm[1-20]").ids();
    let provisioned = stack.provision("h[1-20]").ids();
    assert_eq!((launched.len(), provisioned.len()), (20, 20));

    eventually(Duration::from_secs(30), "40 jobs to succeed", || {
        stack.successes(&WORKERS).len() >= 40
    });
    std::thread::sleep(Duration::from_millis(300)); // a duplicate would show up by now
    let done = stack.successes(&WORKERS);
    let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
    for (worker, id) in &done {
        seen.entry(id.as_str()).or_default().push(worker.as_str());
    }
    for (ids, workers) in [(&launched, ["l1", "l2"]), (&provisioned, ["p1", "p2"])] {
        for id in ids {
            let ran_on = seen.get(id.as_str()).cloned().unwrap_or_default();
            assert_eq!(
                ran_on.len(),
                1,
                "job {id} ran {} times: {ran_on:?}",
                ran_on.len()
            );
            assert!(
                workers.contains(&ran_on[0]),
                "job {id} ran on {}",
                ran_on[0]
            );
        }
        for w in workers {
            assert!(
                done.iter().any(|(on, _)| on == w),
                "{w} took no job; jobs were not shared"
            );
        }
    }
    assert_eq!(done.len(), 40);
    // Each step and the final state land on a line with the job id.
    for state in [
        "RECEIVED", "STARTED", "running", "deploy", "active", "SUCCESS",
    ] {
        assert!(
            launcher_logged(&stack, &launched[0], state),
            "no {state} line for {}",
            launched[0]
        );
    }
    let p = stack.logs(&["p1", "p2"]);
    for state in [
        "INITIATING",
        "PREPARING_IMAGE",
        "BOOTING",
        "AVAILABLE",
        "SUCCESS",
    ] {
        assert!(
            p.contains(&format!("{} cm.provision: {state}", provisioned[0])),
            "no {state} line"
        );
    }
    assert_eq!(queue_depth(&stack.launch), 0);
}

#[test]
fn stop_lets_a_running_job_finish_and_leaves_nothing_behind() {
    let stack = slow_stack(0.5);
    stack.start(&[]);
    let pids = stack.worker_pids();
    assert_eq!(pids.len(), 4);
    let id = stack.launch().recipe("Nagios").id();
    eventually(Duration::from_secs(10), "the job to start", || {
        launcher_logged(&stack, &id, "STARTED")
    });
    let out = stack.server_stop();
    for name in WORKERS {
        assert!(out.contains(&format!("{name:<8} stopped")), "{out}");
        assert!(
            !stack.pid_file(name).exists(),
            "{name}'s pid file is still there"
        );
    }
    assert!(pids.iter().all(|p| !alive(*p)), "a worker survived stop");
    assert!(stack.worker_pids().is_empty());
    assert!(
        launcher_logged(&stack, &id, "SUCCESS"),
        "the running job did not finish:\n{}",
        stack.logs(&["l1", "l2"])
    );
    assert_eq!(queue_depth(&stack.launch), 0, "the job was not acked");

    // Stopping again: nothing runs, and that is a success.
    let again = stack.server_stop();
    assert!(again.contains("nothing to stop"), "{again}");
}

#[test]
fn stop_returns_unstarted_jobs_to_the_queue() {
    let stack = slow_stack(0.3);
    stack.start(&["l1", "l2"]);
    let ids = stack.launch().hosts("vm[1-10]").ids();
    eventually(Duration::from_secs(10), "a job to start", || {
        stack.logs(&["l1", "l2"]).contains("STARTED")
    });
    stack.stop(&[]);
    let finished = stack.successes(&["l1", "l2"]).len() as u32;
    assert!(
        finished < 10,
        "all jobs finished before the stop; the test proves nothing"
    );
    assert_eq!(
        queue_depth(&stack.launch),
        10 - finished,
        "a job was lost or double-acked"
    );
    // And they run once the workers are back.
    stack.start(&["l1", "l2"]);
    eventually(Duration::from_secs(30), "all 10 jobs done", || {
        stack.successes(&["l1", "l2"]).len() >= ids.len()
    });
}

#[test]
fn clean_kills_an_orphan_whose_pid_file_was_deleted() {
    let stack = Stack::new();
    stack.start(&[]);
    let orphan = stack.pid_of("p1");
    std::fs::remove_file(stack.pid_file("p1")).expect("remove pid file");
    let status = stack.ok(&["queue", "status", "p1", "--json"]);
    assert!(status.contains("\"orphan\""), "{status}");

    let out = stack.ok(&["server", "clean", "--logs"]);
    assert!(
        out.contains(&format!("orphan (no pid file) p1 (pid {orphan})")),
        "{out}"
    );
    eventually(Duration::from_secs(5), "the orphan to die", || {
        !alive(orphan)
    });
    assert!(stack.worker_pids().is_empty());
    for name in WORKERS {
        assert!(!stack.pid_file(name).exists());
        assert!(!stack.log_file(name).exists(), "--logs left {name}'s log");
    }
}

#[test]
fn a_stale_pid_file_naming_a_stranger_is_removed_and_the_stranger_survives() {
    let stack = Stack::new();
    let stranger = stranger();
    let pid = stranger.pid();
    let stale = || std::fs::write(stack.pid_file("p1"), format!("{pid}\n")).expect("write");
    std::fs::create_dir_all(stack.pid_file("p1").parent().expect("dir")).expect("mkdir");
    stale();
    std::fs::write(stack.pid_file("p2"), "garbage\0\n").expect("write");

    let status = stack.ok(&["queue", "status", "--json"]);
    assert!(status.contains("stale pid"), "{status}");
    let out = stack.server_stop();
    assert!(out.contains("stale pid file removed"), "{out}");
    assert!(!stack.pid_file("p1").exists() && !stack.pid_file("p2").exists());
    stale();
    stack.ok(&["server", "clean"]);
    assert!(!stack.pid_file("p1").exists());
    // Start takes over the stale file too.
    stale();
    stack.start(&[]);
    assert_ne!(stack.pid_of("p1"), pid);

    assert!(alive(pid), "cm signalled a process it does not own");
}

#[test]
fn start_twice_leaves_exactly_four_workers() {
    let stack = Stack::new();
    stack.start(&[]);
    let first = stack.worker_pids();
    let out = stack.start(&[]);
    assert!(
        out.contains("stopped"),
        "second start did not stop the first workers:\n{out}"
    );
    let second = stack.worker_pids();
    assert_eq!(second.len(), 4, "{second:?}");
    assert!(first.iter().all(|p| !second.contains(p)));
}

#[test]
fn restart_replaces_each_worker() {
    let stack = Stack::new();
    stack.start(&[]);
    let before: Vec<i32> = WORKERS.iter().map(|w| stack.pid_of(w)).collect();
    let out = stack.ok(&["queue", "restart"]);
    assert_eq!(out.matches("ready").count(), 4, "{out}");
    for (w, old) in WORKERS.iter().zip(before) {
        let new = stack.pid_of(w);
        assert_ne!(new, old, "{w} was not restarted");
        assert!(alive(new) && !alive(old));
    }
}

#[test]
fn start_against_a_closed_port_fails_naming_the_broker() {
    let port = closed_port();
    let stack = Stack::with(Options {
        broker: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ..Options::default()
    });
    let stderr = stack.fails(&["queue", "start"], 69);
    assert!(
        stderr.contains(&format!("no broker at amqp://guest:***@127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("p1, p2, l1, l2 not started"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stack.worker_pids().is_empty(), "a failed worker lingers");
    for name in WORKERS {
        assert!(!stack.pid_file(name).exists());
    }
}

#[test]
fn a_malformed_config_fails_with_its_line_and_column() {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).expect("read");
    stack.edit_config(|t| t.replace("concurrency = 1\n[queues", "concurrency = = 1\n[queues"));
    let stderr = stack.fails(&["queue", "start"], 78);
    assert!(stderr.contains("fabfile.toml:13:15:"), "{stderr}");

    stack.edit_config(|_| text.replace("stop_grace_seconds", "stop_grace_secs"));
    let stderr = stack.fails(&["queue", "status"], 78);
    assert!(
        stderr.contains("fabfile.toml:7:1: unknown field `stop_grace_secs`"),
        "{stderr}"
    );
}

/// A number past what a duration holds is a config error naming the key and its range, never a
/// panic (exit 101 and a backtrace, as `1e99` once was).
#[test]
fn an_out_of_range_number_is_refused_by_name_not_a_panic() {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).expect("read");
    for (key, bad) in [
        ("stop_grace_seconds", "1e99"),
        ("stop_grace_seconds", "nan"),
        ("start_timeout_seconds", "-1"),
    ] {
        stack.edit_config(|_| {
            text.lines()
                .map(|l| {
                    if l.starts_with(key) {
                        format!("{key} = {bad}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        let stderr = stack.fails(&["queue", "status"], 78);
        assert!(
            stderr.contains(&format!("worker.{key} must be from 0 to 86400 (got")),
            "{key} = {bad}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    }
}

#[test]
fn an_unknown_worker_name_is_refused() {
    let stack = Stack::new();
    let stderr = stack.fails(&["queue", "start", "p9"], 64);
    assert!(stderr.contains("unknown worker \"p9\""), "{stderr}");
    assert!(stack.worker_pids().is_empty());
}

/// A file where the dir `dir` of `[paths] dir` should be: as root no permission bit stops cm,
/// this does. `cm queue start` must name the dir and the key to set.
fn a_dir_that_is_a_file_is_named(dir: &str, said: &str) {
    let stack = Stack::new();
    std::fs::write(stack.dir.path().join(dir), "not a dir").expect("write");
    let stderr = stack.fails(&["queue", "start"], 77);
    assert!(stderr.contains(said), "{stderr}");
    let key = if dir == "run" { "pid_dir" } else { "log_dir" };
    assert!(stderr.contains(&format!("set [paths] {key}")), "{stderr}");
    assert!(stack.worker_pids().is_empty());
}

#[test]
fn a_pid_dir_that_cannot_be_created_is_named() {
    a_dir_that_is_a_file_is_named("run", "cannot write pid dir");
}

#[test]
fn sighup_reopens_the_log_after_rotation() {
    let stack = Stack::new();
    stack.start(&["l1"]);
    let log = stack.log_file("l1");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    let pid = stack.pid_of("l1");
    signal(pid, Signal::SIGHUP);
    eventually(Duration::from_secs(5), "a new log file", || log.exists());
    let id = stack.launch().wait().id();
    assert!(
        stack
            .log("l1")
            .contains(&format!("{id} cm.launch: SUCCESS")),
        "{}",
        stack.log("l1")
    );
    assert!(alive(pid), "SIGHUP killed the worker");
    assert!(!std::fs::read_to_string(&rotated)
        .expect("old log")
        .contains(&id));
}

#[test]
fn a_log_dir_that_cannot_be_written_is_named() {
    a_dir_that_is_a_file_is_named("log", "cannot write log dir");
}

#[test]
fn an_invalid_broker_url_is_a_config_error_naming_the_key() {
    let stack = Stack::with(Options {
        broker: "http://127.0.0.1:5672".into(),
        ..Options::default()
    });
    let stderr = stack.fails(&["queue", "start"], 78);
    assert!(
        stderr.contains("fabfile.toml:2:7: broker.url: invalid AMQP URL"),
        "{stderr}"
    );
}

#[test]
fn quiet_mode_prints_only_data() {
    let stack = Stack::new();
    let out = stack.ok(&["-q", "queue", "start"]);
    assert!(out.is_empty(), "{out}");
    assert_eq!(stack.worker_pids().len(), 4);
    let ran = stack.launch().quiet().hosts("vm[1-2]").wait().run();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout.lines().count(), 2, "only the two job ids");
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);
    let out = stack.ok(&["-q", "server", "stop"]);
    assert!(out.is_empty(), "{out}");
    assert!(stack.worker_pids().is_empty());
}

//! A job's processes are the job's: what a command leaves running — daemonised with `setsid`,
//! double-forked, plainly in the background, even with its environment cleared — is stopped when its job ends, when its time
//! limit fires and when it is terminated, unless the task keeps it (`keep_children`); a
//! stranger with the same argv, even the same environment, is never touched. Real worker, real
//! `/bin/sh`, `setsid` and `sleep`; each left process is found in /proc by its argv.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A `sleep` argument no other process on this machine runs: how a test's processes are found.
fn marker() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "777.{}{:03}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The live `sleep MARKER` processes.
fn sleeping(marker: &str) -> Vec<i32> {
    pids_running(&["sleep", marker])
}

/// A stack whose worker `c1` takes the command tasks of `tasks` (kill_grace 1 s each).
fn commands(tasks: &str) -> Stack {
    Stack::with(Options {
        own_queue: Some(OwnQueue::commands(tasks)),
        ..Options::default()
    })
}

/// The pid a command wrote to `file`, once it has.
fn pid_written(stack: &Stack, file: &str) -> i32 {
    eventually(
        Duration::from_secs(20),
        "the command to write a pid",
        || std::fs::read_to_string(stack.file(file)).is_ok_and(|t| t.ends_with('\n')),
    );
    read_pid(&stack.file(file))
}

/// Zombie children of `pid`: what a subreaper that does not reap piles up.
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            zombies.extend(entry.file_name().to_string_lossy().parse::<i32>());
        }
    }
    zombies
}

#[test]
fn a_daemonised_or_double_forked_command_leaves_no_process_when_its_job_ends() {
    let (m1, m2, m3, m4) = (marker(), marker(), marker(), marker());
    let stack = commands(&format!(
        r#"[tasks."t.setsid"]
command = ["/bin/sh", "-c", "setsid sleep {m1} & echo $! > {{dir}}/setsid; echo started"]
kill_grace = 1
[tasks."t.double"]
command = ["/bin/sh", "-c", "setsid /bin/sh -c 'sleep {m2} > /dev/null 2>&1 & echo $! > {{dir}}/double'; echo forked"]
kill_grace = 1
[tasks."t.background"]
command = ["/bin/sh", "-c", "sleep {m3} > /dev/null 2>&1 & echo $! > {{dir}}/background"]
kill_grace = 1
[tasks."t.bare"]
command = ["/bin/sh", "-c", "env -i setsid sleep {m4} > /dev/null 2>&1 & echo $! > {{dir}}/bare; sleep 2"]
kill_grace = 1
"#
    ));
    // The same argv as the first job's stray, but no descendant of the worker.
    let stranger = Killed::spawn(Command::new("sleep").arg(&m1));
    stack.start(&["c1"]);
    let worker = stack.pid_of("c1");
    for (task, file, m) in [
        ("t.setsid", "setsid", &m1),
        ("t.double", "double", &m2),
        ("t.background", "background", &m3),
        // No CM_JOB_ID to tell it by: noted under its leader while the command ran.
        ("t.bare", "bare", &m4),
    ] {
        let began = Instant::now();
        let ran = stack.call(task).timeout(60.0).run();
        assert_eq!(ran.code, Some(0), "{task}: {ran:?}");
        let id = ran.stdout.lines().next().unwrap_or_default().to_string();
        assert_eq!(stack.job(&id)["state"], "SUCCESS", "{task}");
        let stray = pid_written(&stack, file);
        eventually(Duration::from_secs(5), "the stray to be stopped", || {
            !alive(stray)
        });
        let left = sleeping(m);
        let expected = if task == "t.setsid" {
            vec![stranger.pid()]
        } else {
            Vec::new()
        };
        assert_eq!(
            left, expected,
            "{task} left a process (or the stranger died)"
        );
        eprintln!("{task}: job and its stray ended in {:?}", began.elapsed());
    }
    assert!(alive(stranger.pid()), "a stranger was killed");
    eventually(
        Duration::from_secs(10),
        "no zombie under the worker",
        || zombie_children(worker).is_empty(),
    );
    stack.server_stop();
}

#[test]
fn a_time_limit_and_a_terminate_stop_what_the_command_left_outside_its_group() {
    let (m1, m2) = (marker(), marker());
    let stack = commands(&format!(
        r#"[tasks."t.limited"]
command = ["/bin/sh", "-c", "setsid sleep {m1} > /dev/null 2>&1 & echo $! > {{dir}}/limited; sleep 60"]
time_limit = 1
kill_grace = 1
[tasks."t.terminated"]
command = ["/bin/sh", "-c", "setsid sleep {m2} > /dev/null 2>&1 & echo $! > {{dir}}/terminated; exec sleep 60"]
kill_grace = 1
"#
    ));
    stack.start(&["c1"]);
    let ran = stack.call("t.limited").timeout(60.0).run();
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let id = ran.stdout.lines().next().unwrap_or_default().to_string();
    assert_eq!(stack.job(&id)["error"], "time limit 1 s exceeded");
    let stray = pid_written(&stack, "limited");
    eventually(
        Duration::from_secs(5),
        "the time limit's stray to go",
        || !alive(stray) && sleeping(&m1).is_empty(),
    );

    let id = stack.call("t.terminated").id();
    let stray = pid_written(&stack, "terminated");
    eventually(Duration::from_secs(20), "the job to start", || {
        stack.job(&id)["state"] == "STARTED"
    });
    // A stranger with the stray's very argv and environment (its job id, worker and config):
    // only its ancestry tells it apart.
    let env = std::fs::read(format!("/proc/{stray}/environ")).expect("the stray's environment");
    let mut look_alike = Command::new("sleep");
    look_alike.arg(&m2).env_clear();
    for pair in env.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let text = String::from_utf8_lossy(pair);
        if let Some((k, v)) = text.split_once('=') {
            look_alike.env(k, v);
        }
    }
    let stranger = Killed::spawn(&mut look_alike);
    let said = stack.ok(&["jobs", "revoke", &id, "--terminate"]);
    assert!(said.contains("terminated with SIGTERM"), "{said}");
    eventually(Duration::from_secs(10), "the job to end REVOKED", || {
        stack.job(&id)["state"] == "REVOKED"
    });
    eventually(
        Duration::from_secs(5),
        "the terminated job's stray to go",
        || !alive(stray),
    );
    assert_eq!(sleeping(&m2), vec![stranger.pid()], "a stranger was killed");
    stack.server_stop();
    assert!(alive(stranger.pid()), "the stop killed a stranger");
}

#[test]
fn a_worker_stopped_mid_job_stops_what_the_command_left_outside_its_group() {
    let m = marker();
    // A grace of 4 s: the worker stops its running jobs itself half way.
    let stack = Stack::with(Options {
        grace_seconds: 4.0,
        own_queue: Some(OwnQueue::commands(&format!(
            r#"[tasks."t.long"]
command = ["/bin/sh", "-c", "setsid sleep {m} > /dev/null 2>&1 & echo $! > {{dir}}/long; exec sleep 60"]
kill_grace = 1
"#
        ))),
        ..Options::default()
    });
    stack.start(&["c1"]);
    let id = stack.call("t.long").id();
    let stray = pid_written(&stack, "long");
    eventually(Duration::from_secs(20), "the job to start", || {
        stack.job(&id)["state"] == "STARTED"
    });
    stack.stop(&["c1"]);
    eventually(
        Duration::from_secs(5),
        "the stray to go with its worker",
        || !alive(stray),
    );
    assert!(sleeping(&m).is_empty());
    let log = stack.log("c1");
    assert!(log.contains("it goes back to the queue"), "{log}");
}

#[test]
fn keep_children_leaves_them_running_until_the_worker_next_starts() {
    let (m1, m2) = (marker(), marker());
    // One daemonised, one a plain background process in the command's group: both kept.
    let stack = commands(&format!(
        r#"[tasks."t.keep"]
command = ["/bin/sh", "-c", "setsid sleep {m1} > /dev/null 2>&1 & echo $! > {{dir}}/kept; sleep {m2} > /dev/null 2>&1 & echo $! > {{dir}}/kept2"]
keep_children = true
"#
    ));
    stack.start(&["c1"]);
    let ran = stack.call("t.keep").timeout(60.0).run();
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let id = ran.stdout.lines().next().unwrap_or_default().to_string();
    let kept = [pid_written(&stack, "kept"), pid_written(&stack, "kept2")];
    let _kill = kept.map(KillOnDrop);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        kept.iter().all(|p| alive(*p)),
        "a kept process was stopped with its job"
    );
    assert_eq!([sleeping(&m1), sleeping(&m2)], kept.map(|p| vec![p]));

    // A clean stop leaves them; the next start of c1 stops them, naming the job that left them.
    stack.stop(&["c1"]);
    assert!(
        kept.iter().all(|p| alive(*p)),
        "the worker's stop killed a kept process"
    );
    stack.start(&["c1"]);
    eventually(Duration::from_secs(10), "the start to stop them", || {
        kept.iter().all(|p| !alive(*p))
    });
    let log = stack.log("c1");
    let said = log
        .lines()
        .find(|l| l.contains("left behind by"))
        .unwrap_or_else(|| panic!("no sweep line in {log}"));
    assert!(
        said.contains(&format!(
            "stopped 2 process(es) left behind by job {id} (pids "
        )) && kept.iter().all(|p| said.contains(&p.to_string())),
        "{said}"
    );
    assert!(!log.contains("last died"), "{log}");
    stack.server_stop();
}

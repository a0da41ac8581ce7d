use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::output::MAX_LINE;
use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A run of a job of its own: the tests run at once in one process, and a job's strays are
/// known by its id.
fn inv(dir: &Path, argv: &[&str]) -> Invocation {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    Invocation {
        job_id: format!("j{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: None,
        env: Vec::new(),
        stdin: r#"[["a"], {"k": 1}]"#.into(),
        result_file: dir.join("result.json"),
        time_limit: None,
        kill_grace: Duration::from_millis(300),
        keep_children: false,
    }
}

/// The pid a command wrote to `file`.
fn pid_in(file: &Path) -> nix::unistd::Pid {
    let text = std::fs::read_to_string(file).expect("a pid file the command wrote");
    nix::unistd::Pid::from_raw(text.trim().parse().expect("a pid"))
}

/// Runs `inv` with nobody cancelling; the lines heard and the steps announced.
fn go(inv: &Invocation, cancel: Option<(Duration, Cancel)>) -> (Ran, Vec<String>, Vec<String>) {
    runtime().block_on(async {
        let stops = crate::jobs::cancel::Stops::default();
        let rx = stops.for_job(inv.job_id.as_str().into());
        if let Some((after, what)) = cancel {
            let id = inv.job_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                match what {
                    Cancel::Terminate(sig) => stops.terminate(&id, sig),
                    Cancel::Shutdown => stops.shutdown(),
                }
            });
        }
        let (mut lines, mut states) = (Vec::new(), Vec::new());
        let ran = run(
            inv,
            |s, l| lines.push(format!("{}: {l}", s.label())),
            |n| states.push(n.to_string()),
            rx,
        )
        .await
        .expect("the command starts");
        (ran, lines, states)
    })
}

#[test]
fn output_states_stdin_env_and_result_reach_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = r#"echo "got $(cat) as $CM_JOB_ID"; echo oops >&2; echo 'cm-state: deploy'; echo '{"ok": [1, 2]}' > "$CM_RESULT""#;
    let i = inv(dir.path(), &["/bin/sh", "-c", script]);
    let (ran, lines, states) = go(&i, None);
    assert_eq!(ran.ended, Ended::Exited(0));
    assert!(
        lines.contains(&format!(r#"out: got [["a"], {{"k": 1}}] as {}"#, i.job_id)),
        "{lines:?}"
    );
    assert!(lines.contains(&"err: oops".to_string()), "{lines:?}");
    assert_eq!(states, ["deploy"]);
    assert_eq!(ran.verdict(), Some(Ok(r#"{"ok":[1,2]}"#.to_string())));
    assert!(ran.tail.contains("err: oops\n"), "{}", ran.tail);
    assert!(
        !dir.path().join("result.json").exists(),
        "the result file is cleaned up"
    );
}

#[test]
fn an_argument_holding_shell_syntax_is_printed_not_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let value = "$(touch pwned); `touch pwned` && touch pwned | x > pwned";
    let mut i = inv(dir.path(), &["/bin/echo", value]);
    i.cwd = Some(dir.path().to_path_buf());
    let (ran, lines, _) = go(&i, None);
    assert_eq!(ran.ended, Ended::Exited(0));
    assert_eq!(lines, [format!("out: {value}")]);
    assert!(!dir.path().join("pwned").exists());
}

#[test]
fn a_non_zero_exit_fails_naming_the_status_and_the_last_stderr_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ran, _, _) = go(
        &inv(
            dir.path(),
            &[
                "/bin/sh",
                "-c",
                "echo first >&2; echo 'disk full' >&2; exit 3",
            ],
        ),
        None,
    );
    assert_eq!(ran.ended, Ended::Exited(3));
    assert_eq!(ran.verdict(), Some(Err("exit status 3: disk full".into())));
}

#[test]
fn a_time_limit_stops_the_whole_group_and_fails_naming_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 30 & echo $! > {}; trap '' TERM; sleep 30",
        pids.display()
    );
    let mut i = inv(dir.path(), &["/bin/sh", "-c", &script]);
    i.time_limit = Some(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (ran, _, _) = go(&i, None);
    assert_eq!(ran.ended, Ended::TimeLimit(Duration::from_millis(300)));
    assert_eq!(ran.verdict(), Some(Err("time limit 0.3 s exceeded".into())));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(crate::control::procs::is_dead(pid_in(&pids)));
}

#[test]
fn a_terminate_ends_it_with_its_signal_and_no_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let i = inv(dir.path(), &["/bin/sleep", "30"]);
    let (ran, _, _) = go(
        &i,
        Some((
            Duration::from_millis(100),
            Cancel::Terminate(Signal::SIGINT),
        )),
    );
    assert_eq!(ran.ended, Ended::Terminated(Signal::SIGINT));
    assert_eq!(ran.verdict(), None);
}

#[test]
fn what_the_leader_leaves_behind_goes_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    let script = format!("sleep 30 & echo $! > {}; echo done", pids.display());
    let (ran, lines, _) = go(&inv(dir.path(), &["/bin/sh", "-c", &script]), None);
    assert_eq!(ran.ended, Ended::Exited(0));
    assert_eq!(lines, ["out: done"]);
    assert!(crate::control::procs::is_dead(pid_in(&pids)));
}

/// Without a subreaper (this test process is none) a stray is found while it is still a
/// descendant: here at the time limit, while the leader waits for it.
#[test]
fn a_stray_that_left_the_group_is_stopped_with_the_job_unless_kept() {
    for keep in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        // The stray writes its pid once it has left the group; the leader waits for that.
        let script = format!(
            "setsid /bin/sh -c 'echo $$ > {p}.new; mv {p}.new {p}; exec sleep 30' & \
             while [ ! -e {p} ]; do sleep 0.01; done; wait",
            p = pids.display()
        );
        let mut i = inv(dir.path(), &["/bin/sh", "-c", &script]);
        i.time_limit = Some(Duration::from_millis(1000));
        i.keep_children = keep;
        let (ran, _, _) = go(&i, None);
        assert_eq!(ran.ended, Ended::TimeLimit(Duration::from_millis(1000)));
        let stray = pid_in(&pids);
        // Signalled, it may still be exiting (no longer a descendant to wait for): a moment.
        let wait = if keep { 300 } else { 3000 };
        let until = std::time::Instant::now() + Duration::from_millis(wait);
        while !crate::control::procs::is_dead(stray) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            crate::control::procs::is_dead(stray),
            !keep,
            "keep_children = {keep}"
        );
        let _ = nix::sys::signal::kill(stray, Signal::SIGKILL);
    }
}

#[test]
fn a_kept_stray_holding_the_outputs_does_not_hold_up_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    let script = format!("setsid sleep 30 & echo $! > {}; echo done", pids.display());
    let mut i = inv(dir.path(), &["/bin/sh", "-c", &script]);
    i.keep_children = true;
    let started = std::time::Instant::now();
    let (ran, lines, _) = go(&i, None);
    assert_eq!(ran.ended, Ended::Exited(0));
    assert_eq!(lines, ["out: done"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let stray = pid_in(&pids);
    assert!(
        !crate::control::procs::is_dead(stray),
        "the kept stray was stopped"
    );
    let _ = nix::sys::signal::kill(stray, Signal::SIGKILL);
}

#[test]
fn a_result_that_is_not_json_fails_the_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ran, _, _) = go(
        &inv(
            dir.path(),
            &["/bin/sh", "-c", "echo 'not json' > \"$CM_RESULT\""],
        ),
        None,
    );
    assert!(
        matches!(ran.verdict(), Some(Err(why)) if why.starts_with("$CM_RESULT is not JSON")),
        "{:?}",
        ran.verdict()
    );
}

#[test]
fn long_lines_are_cut_and_the_tail_keeps_the_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; seq 1 20000";
    let (ran, lines, _) = go(&inv(dir.path(), &["/bin/sh", "-c", script]), None);
    assert_eq!(ran.ended, Ended::Exited(0));
    assert!(
        lines[0].len() <= MAX_LINE + 5 && lines[1].starts_with("out: x"),
        "{}",
        lines[0].len()
    );
    assert!(ran.tail.len() <= TAIL_BYTES, "{}", ran.tail.len());
    assert!(ran.tail.ends_with("19999\n20000\n"));
}

//! Command tasks on real workers: real `/bin/sh`, `sleep` and `echo` run by `cm worker`, their
//! output read back from the real log, their fate from the real store.

mod common;

use std::time::Duration;

use common::celery::{client_with_results, python, spawn_python};
use common::*;

/// A stack whose own queue (worker `c1`) takes the command tasks of `tasks`.
fn commands(tasks: &str) -> Stack {
    Stack::with(Options {
        own_queue: Some(OwnQueue::commands(tasks)),
        ..Options::default()
    })
}

/// [`commands`] with a stop grace of `grace_seconds` and workers `workers`, with more `[worker]`
/// keys.
fn commands_with(
    tasks: &str,
    grace_seconds: f64,
    workers: &'static [&'static str],
    worker_keys: &str,
) -> Stack {
    Stack::with(Options {
        grace_seconds,
        worker_keys: worker_keys.into(),
        own_queue: Some(OwnQueue {
            workers,
            ..OwnQueue::commands(tasks)
        }),
        ..Options::default()
    })
}

/// `cm call TASK --args ARGS --wait --timeout 60`: (exit code, job id).
fn call_waiting(stack: &Stack, task: &str, args: &str) -> (Option<i32>, String) {
    let ran = stack.call(task).args(args).timeout(60.0).run();
    let id = ran.stdout.lines().next().unwrap_or_default().to_string();
    (ran.code, id)
}

/// The pids (or other numbers) a command wrote to `file`, one a line.
fn numbers_in(stack: &Stack, file: &str) -> Vec<i32> {
    std::fs::read_to_string(stack.file(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The one pid a command wrote to `file`.
fn pid_in(stack: &Stack, file: &str) -> i32 {
    read_pid(&stack.file(file))
}

#[test]
fn a_command_runs_with_its_values_stdin_and_env_and_prints_to_the_log() {
    let stack = commands(
        r#"[tasks."t.echo"]
command = ["/bin/sh", "-c", "echo \"host=$1 worker=$CM_WORKER job=$CM_JOB_ID\"; cat; echo; echo 'cm-state: deploy'; echo 'cm-state: SUCCESS'; echo oops >&2; echo '{{\"ok\": true}}' > \"$CM_RESULT\"", "sh", "{host}"]
params = ["host"]
cwd = "{dir}"
"#,
    );
    stack.start(&["c1"]);
    let value = "$(touch pwned); `touch pwned` && touch pwned | x > pwned";
    let args = serde_json::json!([value]).to_string();
    let out = stack.call("t.echo").args(&args).timeout(30.0).stdout();
    let lines: Vec<&str> = out.lines().collect();
    let id = lines[0];
    assert_eq!(lines.get(1), Some(&r#"{"ok":true}"#), "{out}");
    let log = stack.log("c1");
    assert!(
        log.contains(&format!("{id} t.echo: out: host={value} worker=c1@")),
        "the value was not printed literally:\n{log}"
    );
    assert!(
        log.contains(&format!("{id} t.echo: out: job={id}")) || log.contains(&format!("job={id}")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{id} t.echo: out: [[{}],{{}}]",
            serde_json::json!(value)
        )),
        "stdin: {log}"
    );
    assert!(log.contains(&format!("{id} t.echo: err: oops")), "{log}");
    assert!(!stack.file("pwned").exists(), "shell syntax in a value ran");
    let row = stack.job(id);
    assert_eq!(row["state"], "SUCCESS", "{row}");
    // A `cm-state:` line is a step of the history; one naming cm's own states is not.
    assert_eq!(
        stack.history(id),
        ["PENDING", "RECEIVED", "STARTED", "deploy", "SUCCESS"]
    );
    let output = row["output"].as_str().unwrap_or("");
    assert!(
        output.contains("cm-state: deploy") && output.contains("oops"),
        "{output}"
    );
    stack.server_stop();
}

/// `cm call --count N` publishes N jobs of the task, each with an id of its own, and `--wait`
/// waits for them all; each runs its command once.
#[test]
fn call_count_publishes_that_many_jobs_and_waits_for_all() {
    let stack = commands(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "echo 1 >> {dir}/marks"]
"#,
    );
    stack.start(&["c1"]);
    let ids: std::collections::BTreeSet<String> = stack
        .call("t.mark")
        .count(5)
        .timeout(60.0)
        .ids()
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 5, "five distinct ids, no result line: {ids:?}");
    for id in &ids {
        assert_eq!(stack.job(id)["state"], "SUCCESS");
    }
    assert_eq!(numbers_in(&stack, "marks").len(), 5, "each job ran once");
    stack.server_stop();
}

#[test]
fn bad_values_and_exits_fail_naming_why_and_run_nothing() {
    let stack = commands(
        r#"[tasks."t.echo"]
command = ["/bin/echo", "ran", "{host}"]
params = ["host"]
[tasks."t.exit"]
command = ["/bin/sh", "-c", "echo first >&2; echo 'disk full' >&2; exit 3"]
"#,
    );
    stack.start(&["c1"]);
    // cm call refuses it (exit 64, nothing published); a Celery client's message of it fails.
    let (code, refused) = call_waiting(&stack, "t.echo", r#"["--delete"]"#);
    assert_eq!((code, refused.as_str()), (Some(64), ""));
    let msg = cm::celery::message::TaskMessage::new(
        "t.echo",
        vec!["--delete".into()],
        Default::default(),
    );
    let dash = msg.id.clone();
    let (body, props) = msg.encode("a celery client");
    publish_to(stack.queue(), &body, props);
    eventually(Duration::from_secs(30), "the job to fail", || {
        stack
            .jobs()
            .iter()
            .any(|j| j["id"] == dash.as_str() && j["state"] == "FAILURE")
    });
    let row = stack.job(&dash);
    assert_eq!(row["state"], "FAILURE");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains("starts with '-'")),
        "{row}"
    );
    let (code, exit) = call_waiting(&stack, "t.exit", "[]");
    assert_eq!(code, Some(1));
    assert_eq!(stack.job(&exit)["error"], "exit status 3: disk full");
    // Too many positional arguments for a task with one parameter.
    let (code, unfit) = call_waiting(&stack, "t.echo", r#"["a", "b"]"#);
    assert_eq!(code, Some(64), "cm call refuses what no worker would run");
    assert!(unfit.is_empty());
    let log = stack.log("c1");
    assert!(!log.contains(&format!("{dash} t.echo: out: ran")), "{log}");
    stack.server_stop();
}

#[test]
fn a_time_limit_fails_the_job_and_leaves_no_process() {
    let stack = commands(
        r#"[tasks."t.slow"]
command = ["/bin/sh", "-c", "sleep 60 & echo $! > {dir}/member; trap '' TERM; sleep 60"]
time_limit = 1
kill_grace = 1
"#,
    );
    stack.start(&["c1"]);
    let (code, id) = call_waiting(&stack, "t.slow", "[]");
    assert_eq!(code, Some(1));
    assert_eq!(stack.job(&id)["error"], "time limit 1 s exceeded");
    let member = pid_in(&stack, "member");
    eventually(Duration::from_secs(5), "the group to be gone", || {
        !alive(member)
    });
    stack.server_stop();
}

/// A command that sleeps the first time it runs and succeeds the second (a marker file).
const TWICE: &str = r#"[tasks."t.twice"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/runs; if [ -e {dir}/second ]; then exit 0; fi; touch {dir}/second; exec sleep 60"]
"#;

/// Starts `c1`, calls `t.twice` and waits for its first run: (job id, the run's pid).
fn twice_running(stack: &Stack) -> (String, i32) {
    stack.start(&["c1"]);
    let id = stack.call("t.twice").id();
    eventually(Duration::from_secs(20), "the first run", || {
        numbers_in(stack, "runs").len() == 1
    });
    (id, numbers_in(stack, "runs")[0])
}

/// Starts `c1` again and waits for job `id` to end SUCCESS on its second run.
fn runs_again_and_succeeds(stack: &Stack, id: &str) {
    stack.start(&["c1"]);
    eventually(Duration::from_secs(30), "the second run to succeed", || {
        stack.job(id)["state"] == "SUCCESS"
    });
    assert_eq!(numbers_in(stack, "runs").len(), 2);
}

/// Waits for job `id` to be held by a lease in the store.
fn leased(stack: &Stack, id: &str) {
    eventually(Duration::from_secs(20), "the lease to be taken", || {
        stack.ok(&["jobs", "show", id]).contains("LEASED")
    });
}

#[test]
fn stop_during_a_command_gives_the_job_back_and_it_runs_again() {
    let stack = commands_with(TWICE, 4.0, &["c1"], "");
    let (id, first) = twice_running(&stack);
    stack.stop(&["c1"]);
    assert!(!alive(first), "the command outlived its worker's stop");
    let log = stack.log("c1");
    assert!(log.contains("it goes back to the queue"), "{log}");
    runs_again_and_succeeds(&stack, &id);
    assert_eq!(stack.job(&id)["deliveries"], 2);
    stack.server_stop();
}

#[test]
fn kill_9_of_a_worker_mid_command_leaves_no_orphan_and_the_job_ends() {
    let stack = commands(TWICE);
    let (id, first) = twice_running(&stack);
    stack.kill9("c1");
    eventually(
        Duration::from_secs(5),
        "the orphan to die with its worker",
        || !alive(first),
    );
    runs_again_and_succeeds(&stack, &id);
    stack.server_stop();
}

/// A job running past `lease_after_seconds` is acked and held by a lease in the store; its
/// worker killed, the lease lapses and another worker's reaper publishes the job again.
#[test]
fn a_leased_job_whose_worker_dies_is_published_again_and_ends() {
    let stack = commands_with(
        TWICE,
        30.0,
        &["c1", "c2"],
        "lease_after_seconds = 1\nlease_seconds = 3",
    );
    let (id, _) = twice_running(&stack);
    leased(&stack, &id);
    assert_eq!(
        queue_depth(stack.queue()),
        0,
        "a leased job's message is acked"
    );
    stack.start(&["c2"]);
    stack.kill9("c1");
    eventually(
        Duration::from_secs(30),
        "c2 to reap and run the job",
        || stack.job(&id)["state"] == "SUCCESS",
    );
    let shown = stack.ok(&["jobs", "show", &id]);
    assert!(shown.contains("REQUEUED"), "{shown}");
    assert_eq!(numbers_in(&stack, "runs").len(), 2);
    stack.server_stop();
}

/// A leased job's message is acked, so a stop that interrupts it publishes it again itself.
#[test]
fn stop_during_a_leased_command_publishes_it_again_and_it_runs_again() {
    let stack = commands_with(
        TWICE,
        4.0,
        &["c1"],
        "lease_after_seconds = 1\nlease_seconds = 30",
    );
    let (id, _) = twice_running(&stack);
    leased(&stack, &id);
    stack.stop(&["c1"]);
    let log = stack.log("c1");
    assert!(log.contains("REQUEUED"), "{log}");
    assert_eq!(queue_depth(stack.queue()), 1, "published again");
    runs_again_and_succeeds(&stack, &id);
    stack.server_stop();
}

/// Celery's `sum` of two numbers, over the command's argv and `$CM_RESULT`.
const SUM: &str = r#"[tasks."t.sum"]
command = ["/bin/sh", "-c", "echo \"{{\\\"sum\\\": $(($1 + $2))}}\" > \"$CM_RESULT\"", "sh", "{a}", "{b}"]
params = ["a", "b"]
"#;

#[test]
fn a_python_celery_client_runs_a_command_task_and_gets_its_result() {
    let stack = commands(SUM);
    stack.start(&["c1"]);
    let out = python(
        &client_with_results(
            r#"
import sys
r = app.send_task("t.sum", args=[2], kwargs={"b": 40}, queue=sys.argv[1])
print(r.id)
print(r.get(timeout=30)["sum"])
bad = app.send_task("t.sum", args=[1, 2, 3], queue=sys.argv[1])
try:
    bad.get(timeout=30)
    print("no error")
except Exception as e:
    print("error", e)
"#,
        ),
        &[stack.queue()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.get(1), Some(&"42"), "{out}");
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.contains("takes 2 positional argument(s) but 3 were given")),
        "{out}"
    );
    assert_eq!(stack.job(lines[0])["state"], "SUCCESS");
    stack.server_stop();
}

/// What a command's group keeps running after kill -9 of its worker (the parent-death signal
/// reaches only the leader) is found by its job environment and stopped: by the next worker
/// of that name as it starts, and by `cm server clean`.
#[test]
fn what_a_killed_workers_command_left_is_stopped_by_the_next_start_and_by_clean() {
    let stack = commands(
        r#"[tasks."t.forks"]
command = ["/bin/sh", "-c", "sleep 60 & echo $! >> {dir}/members; exec sleep 60"]
"#,
    );
    let members = || numbers_in(&stack, "members");
    let stranger = Killed::spawn(
        std::process::Command::new("sleep")
            .arg("60")
            .env("CM_JOB_ID", "x")
            .env("CM_WORKER", "c1@elsewhere"),
    );
    stack.start(&["c1"]);
    stack.call("t.forks").id();
    eventually(Duration::from_secs(20), "the first run", || {
        members().len() == 1
    });
    stack.kill9("c1");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(members()[0]), "the member should outlive the leader");
    // The next c1 stops it, then runs the job again (it was never acked).
    stack.start(&["c1"]);
    eventually(
        Duration::from_secs(10),
        "the start to stop the leftover",
        || !alive(members()[0]),
    );
    eventually(Duration::from_secs(20), "the second run", || {
        members().len() == 2
    });
    stack.kill9("c1");
    let out = stack.ok(&["server", "clean"]);
    assert!(
        out.contains("killed what a job's command left running"),
        "{out}"
    );
    assert!(!alive(members()[1]));
    assert!(alive(stranger.pid()), "a stranger was killed");
}

/// A job revoked while it waits in its queue (no worker up) never runs: the worker that takes
/// it later settles it REVOKED. A bad signal name is refused (64) before anything is revoked.
#[test]
fn a_job_revoked_while_queued_never_runs_and_show_prints_a_commands_output() {
    let stack = commands(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
[tasks."t.say"]
command = ["/bin/sh", "-c", "echo first line; echo '<b>second</b>' >&2"]
"#,
    );
    let id = stack.call("t.mark").id();
    assert_eq!(stack.job(&id)["state"], "PENDING");

    let stderr = stack.fails(&["jobs", "revoke", &id, "--signal", "STOP"], 64);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown signal \"STOP\""), "{stderr}");
    assert_eq!(stack.job(&id)["state"], "PENDING");

    let said = stack.ok(&["jobs", "revoke", &id, "not-yet-here"]);
    assert!(said.contains(&format!("{id}: REVOKED now")), "{said}");
    assert!(said.contains("not-yet-here: no such job yet"), "{said}");

    stack.start(&["c1"]);
    eventually(Duration::from_secs(20), "the worker to settle it", || {
        stack
            .log("c1")
            .contains(&format!("{id} t.mark: REVOKED (revoked before it ran)"))
    });
    eventually(Duration::from_secs(10), "its message to be acked", || {
        queue_depth(stack.queue()) == 0
    });
    let row = stack.job(&id);
    assert_eq!(row["state"], "REVOKED", "{row}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("revoked by cm@")),
        "{row}"
    );
    assert!(!stack.file("ran").exists(), "the revoked command ran");
    let again = stack.ok(&["jobs", "revoke", &id]);
    assert!(again.contains("already REVOKED; unchanged"), "{again}");

    // `cm jobs show` prints the tail of a command's output, and --json has it.
    let (code, said) = call_waiting(&stack, "t.say", "[]");
    assert_eq!(code, Some(0));
    let shown = stack.ok(&["jobs", "show", &said]);
    assert!(shown.contains("  | first line"), "{shown}");
    assert!(shown.contains("  | err: <b>second</b>"), "{shown}");
    let json = stack.show(&said);
    assert!(
        json["output"]
            .as_str()
            .is_some_and(|o| o.contains("first line")),
        "{json}"
    );
    stack.server_stop();
}

/// A revoke without terminate lets a running command finish; with terminate its whole group
/// gets the signal asked for, and the job ends REVOKED naming it.
#[test]
fn a_running_command_is_left_by_a_revoke_and_stopped_by_a_terminate() {
    let stack = commands(
        r#"[tasks."t.sleep"]
command = ["/bin/sh", "-c", "sleep 30 & echo $! > {dir}/member; echo started; wait"]
"#,
    );
    stack.start(&["c1"]);
    let id = stack.call("t.sleep").id();
    eventually(Duration::from_secs(20), "the command to start", || {
        stack.file("member").exists() && stack.job(&id)["state"] == "STARTED"
    });
    let member = pid_in(&stack, "member");

    let said = stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("left to finish"), "{said}");
    // Past the workers' poll: still running.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(member), "a revoke without terminate stopped it");
    assert_eq!(stack.job(&id)["state"], "STARTED");

    let said = stack.ok(&["jobs", "revoke", &id, "--terminate", "--signal", "usr1"]);
    assert!(
        said.contains("asked to stop, it will be terminated with SIGUSR1"),
        "{said}"
    );
    eventually(Duration::from_secs(10), "the job to end REVOKED", || {
        stack.job(&id)["state"] == "REVOKED"
    });
    let row = stack.job(&id);
    assert!(
        row["error"].as_str().is_some_and(|e| e.contains("SIGUSR1")),
        "{row}"
    );
    eventually(Duration::from_secs(5), "the group to be gone", || {
        !alive(member)
    });
    let shown = stack.ok(&["jobs", "show", &id]);
    assert!(shown.contains("  | started"), "{shown}");
    stack.server_stop();
}

/// A Celery client's job revoked before any worker saw it (no row in the store yet) is kept
/// revoked: the worker that receives it records it REVOKED, never runs it, and the client's
/// `get()` raises TaskRevokedError.
#[test]
fn a_celery_clients_job_revoked_before_it_arrives_is_answered_revoked() {
    let stack = commands(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
"#,
    );
    // Declared by cm (a queue Celery declared would differ in its arguments), then no worker.
    stack.start(&["c1"]);
    stack.stop(&["c1"]);
    let (_client, lines) = spawn_python(
        &client_with_results(
            r#"
import sys
r = app.send_task("t.mark", queue=sys.argv[1])
print(r.id, flush=True)
try:
    r.get(timeout=30)
    print("no error")
except Exception as e:
    print(type(e).__name__, e)
"#,
        ),
        &[stack.queue()],
    );
    let id = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the job id");
    let said = stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("no such job yet"), "{said}");
    stack.start(&["c1"]);
    let answer = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the answer");
    assert!(answer.starts_with("TaskRevokedError"), "{answer}");
    let row = stack.job(&id);
    assert_eq!(row["state"], "REVOKED", "{row}");
    assert!(!stack.file("ran").exists(), "the revoked command ran");
    stack.server_stop();
}

/// A quorum queue counts a message's returns: a job whose worker dies on it every time is
/// dead-lettered at `delivery_limit`, its job FAILURE naming why; the broker drops nothing.
#[test]
fn a_job_its_worker_dies_on_is_dead_lettered_at_the_delivery_limit() {
    let stack = Stack::with(Options {
        own_queue: Some(OwnQueue {
            keys: "concurrency = 2\nqueue_type = \"quorum\"\ndelivery_limit = 2".into(),
            ..OwnQueue::commands(
                r#"[tasks."t.crash"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/runs; kill -9 $PPID"]
"#,
            )
        }),
        ..Options::default()
    });
    stack.start(&["c1"]);
    let id = stack.call("t.crash").id();
    let failed = || stack.job(&id)["state"] == "FAILURE";
    for round in 1..=4 {
        eventually(
            Duration::from_secs(20),
            "the worker to die or the job to end",
            || !alive(stack.pid_of("c1")) || failed(),
        );
        if failed() {
            break;
        }
        assert!(round < 4, "still not dead-lettered after {round} deaths");
        let _ = stack.cm(&["queue", "start", "c1"]);
    }
    eventually(Duration::from_secs(20), "the job to fail", failed);
    let row = stack.job(&id);
    let error = row["error"].as_str().unwrap_or("");
    assert!(error.contains("delivery_limit 2"), "{row}");
    assert_eq!(
        numbers_in(&stack, "runs").len(),
        2,
        "it ran on each delivery below the limit"
    );
    eventually(Duration::from_secs(10), "the dead letter", || {
        queue_depth(&format!("{}.dead", stack.queue())) == 1
    });
    assert_eq!(queue_depth(stack.queue()), 0);
    stack.server_stop();
}

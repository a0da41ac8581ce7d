//! Command tasks on real workers: real `/bin/sh`, `sleep` and `echo` run by `cm worker`, their
//! output read back from the real log, their fate from the real store.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, jobs, Options, Stack};

/// A stack with a queue (worker `c1`) taking the tasks of `tasks` (TOML `[tasks."t.*"]` tables,
/// `{dir}` replaced by a temp dir of the test's own, `dir`), and the stop grace.
struct Commands {
    stack: Stack,
    dir: tempfile::TempDir,
    queue: String,
}

impl Commands {
    fn new(tasks: &str, grace_seconds: f64) -> Self {
        Self::with(tasks, grace_seconds, &["c1"], "")
    }

    /// [`Commands::new`] with workers `workers` and more `[worker]` keys.
    fn with(tasks: &str, grace_seconds: f64, workers: &[&str], worker_keys: &str) -> Self {
        let queue = common::unique("t_cmd");
        let dir = tempfile::tempdir().expect("temp dir");
        let listed: Vec<String> = tasks
            .lines()
            .filter_map(|l| l.strip_prefix("[tasks.\"")?.split('"').next())
            .map(|n| format!("{n:?}"))
            .collect();
        let workers: Vec<String> = workers.iter().map(|w| format!("{w:?}")).collect();
        let extra = format!(
            "[queues.{queue}]\nworkers = [{}]\ntasks = [{}]\nconcurrency = 2\n{tasks}",
            workers.join(", "),
            listed.join(", ")
        );
        let stack = Stack::with(Options {
            grace_seconds,
            worker_extra: format!("allow_root = true\n{worker_keys}"),
            extra: extra.replace("{dir}", &dir.path().display().to_string()),
            ..Options::default()
        });
        stack.delete_on_drop(&queue);
        Self { stack, dir, queue }
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// `cm call TASK --args ARGS --wait`: (exit code, job id).
fn call(stack: &Stack, task: &str, args: &str) -> (Option<i32>, String) {
    let out = stack.cm(&["call", task, "--args", args, "--wait", "--timeout", "60"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().next().unwrap_or_default().to_string();
    (out.status.code(), id)
}

fn job(stack: &Stack, id: &str) -> serde_json::Value {
    jobs(stack)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("job {id} not in the store"))
}

#[test]
fn a_command_runs_with_its_values_stdin_and_env_and_prints_to_the_log() {
    let c = Commands::new(
        r#"[tasks."t.echo"]
command = ["/bin/sh", "-c", "echo \"host=$1 worker=$CM_WORKER job=$CM_JOB_ID\"; cat; echo; echo 'cm-state: deploy'; echo 'cm-state: SUCCESS'; echo oops >&2; echo '{{\"ok\": true}}' > \"$CM_RESULT\"", "sh", "{host}"]
params = ["host"]
cwd = "{dir}"
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let value = "$(touch pwned); `touch pwned` && touch pwned | x > pwned";
    let args = serde_json::json!([value]).to_string();
    let out = stack.ok(&[
        "call",
        "t.echo",
        "--args",
        &args,
        "--wait",
        "--timeout",
        "30",
    ]);
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
    assert!(!c.file("pwned").exists(), "shell syntax in a value ran");
    let row = job(stack, id);
    assert_eq!(row["state"], "SUCCESS", "{row}");
    // A `cm-state:` line is a step of the history; one naming cm's own states is not.
    let history: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&stack.ok(&["jobs", "show", id, "--json"]))
            .expect("cm jobs show --json")["history"]
            .as_array()
            .expect("a history")
            .iter()
            .map(|e| e["state"].as_str().unwrap_or("").to_string())
            .collect();
    assert_eq!(
        history,
        ["PENDING", "RECEIVED", "STARTED", "deploy", "SUCCESS"],
        "{history:?}"
    );
    let output = row["output"].as_str().unwrap_or("");
    assert!(
        output.contains("cm-state: deploy") && output.contains("oops"),
        "{output}"
    );
    stack.ok(&["server", "stop"]);
}

/// `cm call --count N` publishes N jobs of the task, each with an id of its own, and `--wait`
/// waits for them all; each runs its command once.
#[test]
fn call_count_publishes_that_many_jobs_and_waits_for_all() {
    let c = Commands::new(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "echo x >> {dir}/marks"]
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let out = stack.ok(&[
        "call",
        "t.mark",
        "--count",
        "5",
        "--wait",
        "--timeout",
        "60",
    ]);
    let ids: std::collections::BTreeSet<&str> = out.lines().collect();
    assert_eq!(ids.len(), 5, "five distinct ids, no result line: {out}");
    for id in &ids {
        assert_eq!(job(stack, id)["state"], "SUCCESS");
    }
    let marks = std::fs::read_to_string(c.file("marks")).expect("the commands ran");
    assert_eq!(marks.lines().count(), 5, "each job ran once");
    stack.ok(&["server", "stop"]);
}

#[test]
fn bad_values_and_exits_fail_naming_why_and_run_nothing() {
    let c = Commands::new(
        r#"[tasks."t.echo"]
command = ["/bin/echo", "ran", "{host}"]
params = ["host"]
[tasks."t.exit"]
command = ["/bin/sh", "-c", "echo first >&2; echo 'disk full' >&2; exit 3"]
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let (code, dash) = call(stack, "t.echo", r#"["--delete"]"#);
    assert_eq!(code, Some(1));
    let row = job(stack, &dash);
    assert_eq!(row["state"], "FAILURE");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains("starts with '-'")),
        "{row}"
    );
    let (code, exit) = call(stack, "t.exit", "[]");
    assert_eq!(code, Some(1));
    assert_eq!(job(stack, &exit)["error"], "exit status 3: disk full");
    // Too many positional arguments for a task with one parameter.
    let (code, unfit) = call(stack, "t.echo", r#"["a", "b"]"#);
    assert_eq!(code, Some(64), "cm call refuses what no worker would run");
    assert!(unfit.is_empty());
    let log = stack.log("c1");
    assert!(!log.contains(&format!("{dash} t.echo: out: ran")), "{log}");
    stack.ok(&["server", "stop"]);
}

#[test]
fn a_time_limit_fails_the_job_and_leaves_no_process() {
    let c = Commands::new(
        r#"[tasks."t.slow"]
command = ["/bin/sh", "-c", "sleep 60 & echo $! > {dir}/member; trap '' TERM; sleep 60"]
time_limit = 1
kill_grace = 1
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let (code, id) = call(stack, "t.slow", "[]");
    assert_eq!(code, Some(1));
    assert_eq!(job(stack, &id)["error"], "time limit 1 s exceeded");
    let member = std::fs::read_to_string(c.file("member")).expect("the member's pid");
    let member: i32 = member.trim().parse().expect("a pid");
    eventually(Duration::from_secs(5), "the group to be gone", || {
        !common::alive(member)
    });
    stack.ok(&["server", "stop"]);
}

/// A command that sleeps the first time it runs and succeeds the second (a marker file).
const TWICE: &str = r#"[tasks."t.twice"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/runs; if [ -e {dir}/second ]; then exit 0; fi; touch {dir}/second; exec sleep 60"]
"#;

fn runs(c: &Commands) -> Vec<i32> {
    std::fs::read_to_string(c.file("runs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn stop_during_a_command_gives_the_job_back_and_it_runs_again() {
    let c = Commands::new(TWICE, 4.0);
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.twice"]).trim().to_string();
    eventually(Duration::from_secs(20), "the first run", || {
        runs(&c).len() == 1
    });
    let first = runs(&c)[0];
    stack.ok(&["queue", "stop", "c1"]);
    assert!(
        !common::alive(first),
        "the command outlived its worker's stop"
    );
    assert!(
        stack.log("c1").contains("it goes back to the queue"),
        "{}",
        stack.log("c1")
    );
    stack.ok(&["queue", "start", "c1"]);
    eventually(Duration::from_secs(20), "the second run to succeed", || {
        job(stack, &id)["state"] == "SUCCESS"
    });
    assert_eq!(runs(&c).len(), 2);
    assert_eq!(job(stack, &id)["deliveries"], 2);
    stack.ok(&["server", "stop"]);
}

#[test]
fn kill_9_of_a_worker_mid_command_leaves_no_orphan_and_the_job_ends() {
    let c = Commands::new(TWICE, 30.0);
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.twice"]).trim().to_string();
    eventually(Duration::from_secs(20), "the first run", || {
        runs(&c).len() == 1
    });
    let first = runs(&c)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stack.pid_of("c1")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    eventually(
        Duration::from_secs(5),
        "the orphan to die with its worker",
        || !common::alive(first),
    );
    stack.ok(&["queue", "start", "c1"]);
    eventually(
        Duration::from_secs(30),
        "the job to run again and end",
        || job(stack, &id)["state"] == "SUCCESS",
    );
    assert_eq!(runs(&c).len(), 2);
    stack.ok(&["server", "stop"]);
}

#[test]
fn a_python_celery_client_runs_a_command_task_and_gets_its_result() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: `make test` installs Celery (scripts/ensure-celery-venv.sh)",
        python.display()
    );
    let c = Commands::new(
        r#"[tasks."t.sum"]
command = ["/bin/sh", "-c", "echo \"{{\\\"sum\\\": $(($1 + $2))}}\" > \"$CM_RESULT\"", "sh", "{a}", "{b}"]
params = ["a", "b"]
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let script = format!(
        r#"
from celery import Celery
app = Celery("client", broker="{broker}".replace("%2f", "%2F"), backend="rpc://")
app.conf.broker_connection_retry_on_startup = False
r = app.send_task("t.sum", args=[2], kwargs={{"b": 40}}, queue="{queue}")
print(r.id)
print(r.get(timeout=30)["sum"])
bad = app.send_task("t.sum", args=[1, 2, 3], queue="{queue}")
try:
    bad.get(timeout=30)
    print("no error")
except Exception as e:
    print("error", e)
"#,
        broker = common::broker_url(),
        queue = c.queue,
    );
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.get(1), Some(&"42"), "{stdout}");
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.contains("takes 2 positional argument(s) but 3 were given")),
        "{stdout}"
    );
    assert_eq!(job(stack, lines[0])["state"], "SUCCESS");
    stack.ok(&["server", "stop"]);
}

/// What a command's group keeps running after kill -9 of its worker (the parent-death signal
/// reaches only the leader) is found by its job environment and stopped: by the next worker
/// of that name as it starts, and by `cm server clean`.
#[test]
fn what_a_killed_workers_command_left_is_stopped_by_the_next_start_and_by_clean() {
    let c = Commands::new(
        r#"[tasks."t.forks"]
command = ["/bin/sh", "-c", "sleep 60 & echo $! >> {dir}/members; exec sleep 60"]
"#,
        30.0,
    );
    let stack = &c.stack;
    let members = || -> Vec<i32> {
        std::fs::read_to_string(c.file("members"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let kill_9 = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stack.pid_of("c1")),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
    };
    let stranger = std::process::Command::new("sleep")
        .arg("60")
        .env("CM_JOB_ID", "x")
        .env("CM_WORKER", "c1@elsewhere")
        .spawn()
        .expect("a stranger");
    stack.ok(&["queue", "start", "c1"]);
    stack.ok(&["call", "t.forks"]);
    eventually(Duration::from_secs(20), "the first run", || {
        members().len() == 1
    });
    kill_9();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        common::alive(members()[0]),
        "the member should outlive the leader"
    );
    // The next c1 stops it, then runs the job again (it was never acked).
    stack.ok(&["queue", "start", "c1"]);
    eventually(
        Duration::from_secs(10),
        "the start to stop the leftover",
        || !common::alive(members()[0]),
    );
    eventually(Duration::from_secs(20), "the second run", || {
        members().len() == 2
    });
    kill_9();
    let out = stack.ok(&["server", "clean"]);
    assert!(
        out.contains("killed what a job's command left running"),
        "{out}"
    );
    assert!(!common::alive(members()[1]));
    let stranger_pid = i32::try_from(stranger.id()).expect("a pid");
    assert!(common::alive(stranger_pid), "a stranger was killed");
    let mut stranger = stranger;
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// A job running past `lease_after_seconds` is acked and held by a lease in the store; its
/// worker killed, the lease lapses and another worker's reaper publishes the job again.
#[test]
fn a_leased_job_whose_worker_dies_is_published_again_and_ends() {
    let c = Commands::with(
        TWICE,
        30.0,
        &["c1", "c2"],
        "lease_after_seconds = 1\nlease_seconds = 3",
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.twice"]).trim().to_string();
    eventually(Duration::from_secs(20), "the lease to be taken", || {
        stack.ok(&["jobs", "show", &id]).contains("LEASED")
    });
    assert_eq!(
        common::queue_depth(&c.queue),
        0,
        "a leased job's message is acked"
    );
    stack.ok(&["queue", "start", "c2"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stack.pid_of("c1")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    eventually(
        Duration::from_secs(30),
        "c2 to reap and run the job",
        || job(stack, &id)["state"] == "SUCCESS",
    );
    let shown = stack.ok(&["jobs", "show", &id]);
    assert!(shown.contains("REQUEUED"), "{shown}");
    assert_eq!(runs(&c).len(), 2);
    stack.ok(&["server", "stop"]);
}

/// A leased job's message is acked, so a stop that interrupts it publishes it again itself.
#[test]
fn stop_during_a_leased_command_publishes_it_again_and_it_runs_again() {
    let c = Commands::with(
        TWICE,
        4.0,
        &["c1"],
        "lease_after_seconds = 1\nlease_seconds = 30",
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.twice"]).trim().to_string();
    eventually(Duration::from_secs(20), "the lease to be taken", || {
        stack.ok(&["jobs", "show", &id]).contains("LEASED")
    });
    stack.ok(&["queue", "stop", "c1"]);
    let log = stack.log("c1");
    assert!(log.contains("REQUEUED"), "{log}");
    assert_eq!(common::queue_depth(&c.queue), 1, "published again");
    stack.ok(&["queue", "start", "c1"]);
    eventually(Duration::from_secs(20), "the second run to succeed", || {
        job(stack, &id)["state"] == "SUCCESS"
    });
    assert_eq!(runs(&c).len(), 2);
    stack.ok(&["server", "stop"]);
}

/// A job revoked while it waits in its queue (no worker up) never runs: the worker that takes
/// it later settles it REVOKED. A bad signal name is refused (64) before anything is revoked.
#[test]
fn a_job_revoked_while_queued_never_runs_and_show_prints_a_commands_output() {
    let c = Commands::new(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
[tasks."t.say"]
command = ["/bin/sh", "-c", "echo first line; echo '<b>second</b>' >&2"]
"#,
        30.0,
    );
    let stack = &c.stack;
    let id = stack.ok(&["call", "t.mark"]).trim().to_string();
    assert_eq!(job(stack, &id)["state"], "PENDING");

    let bad = stack.cm(&["jobs", "revoke", &id, "--signal", "STOP"]);
    assert_eq!(bad.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown signal \"STOP\""), "{stderr}");
    assert_eq!(job(stack, &id)["state"], "PENDING");

    let said = stack.ok(&["jobs", "revoke", &id, "not-yet-here"]);
    assert!(said.contains(&format!("{id}: REVOKED now")), "{said}");
    assert!(said.contains("not-yet-here: no such job yet"), "{said}");

    stack.ok(&["queue", "start", "c1"]);
    eventually(Duration::from_secs(20), "the worker to settle it", || {
        stack
            .log("c1")
            .contains(&format!("{id} t.mark: REVOKED (revoked before it ran)"))
    });
    eventually(Duration::from_secs(10), "its message to be acked", || {
        common::queue_depth(&c.queue) == 0
    });
    let row = job(stack, &id);
    assert_eq!(row["state"], "REVOKED", "{row}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("revoked by cm@")),
        "{row}"
    );
    assert!(!c.file("ran").exists(), "the revoked command ran");
    let again = stack.ok(&["jobs", "revoke", &id]);
    assert!(again.contains("already REVOKED; unchanged"), "{again}");

    // `cm jobs show` prints the tail of a command's output, and --json has it.
    let (code, said) = call(stack, "t.say", "[]");
    assert_eq!(code, Some(0));
    let shown = stack.ok(&["jobs", "show", &said]);
    assert!(shown.contains("  | first line"), "{shown}");
    assert!(shown.contains("  | err: <b>second</b>"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&stack.ok(&["jobs", "show", &said, "--json"])).expect("JSON");
    assert!(
        json["output"]
            .as_str()
            .is_some_and(|o| o.contains("first line")),
        "{json}"
    );
    stack.ok(&["server", "stop"]);
}

/// A revoke without terminate lets a running command finish; with terminate its whole group
/// gets the signal asked for, and the job ends REVOKED naming it.
#[test]
fn a_running_command_is_left_by_a_revoke_and_stopped_by_a_terminate() {
    let c = Commands::new(
        r#"[tasks."t.sleep"]
command = ["/bin/sh", "-c", "sleep 30 & echo $! > {dir}/member; echo started; wait"]
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.sleep"]).trim().to_string();
    eventually(Duration::from_secs(20), "the command to start", || {
        c.file("member").exists() && job(stack, &id)["state"] == "STARTED"
    });
    let member: i32 = std::fs::read_to_string(c.file("member"))
        .expect("the member's pid")
        .trim()
        .parse()
        .expect("a pid");

    let said = stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("left to finish"), "{said}");
    // Past the workers' poll: still running.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        common::alive(member),
        "a revoke without terminate stopped it"
    );
    assert_eq!(job(stack, &id)["state"], "STARTED");

    let said = stack.ok(&["jobs", "revoke", &id, "--terminate", "--signal", "usr1"]);
    assert!(
        said.contains("asked to stop, it will be terminated with SIGUSR1"),
        "{said}"
    );
    eventually(Duration::from_secs(10), "the job to end REVOKED", || {
        job(stack, &id)["state"] == "REVOKED"
    });
    let row = job(stack, &id);
    assert!(
        row["error"].as_str().is_some_and(|e| e.contains("SIGUSR1")),
        "{row}"
    );
    eventually(Duration::from_secs(5), "the group to be gone", || {
        !common::alive(member)
    });
    let shown = stack.ok(&["jobs", "show", &id]);
    assert!(shown.contains("  | started"), "{shown}");
    stack.ok(&["server", "stop"]);
}

/// A Celery client's job revoked before any worker saw it (no row in the store yet) is kept
/// revoked: the worker that receives it records it REVOKED, never runs it, and the client's
/// `get()` raises TaskRevokedError.
#[test]
fn a_celery_clients_job_revoked_before_it_arrives_is_answered_revoked() {
    use std::io::{BufRead, BufReader};
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.venv/bin/python");
    assert!(python.exists(), "{} missing", python.display());
    let c = Commands::new(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
"#,
        30.0,
    );
    let stack = &c.stack;
    // Declared by cm (a queue Celery declared would differ in its arguments), then no worker.
    stack.ok(&["queue", "start", "c1"]);
    stack.ok(&["queue", "stop", "c1"]);
    let script = format!(
        r#"
import sys
from celery import Celery
app = Celery("client", broker="{broker}".replace("%2f", "%2F"), backend="rpc://")
app.conf.broker_connection_retry_on_startup = False
r = app.send_task("t.mark", queue="{queue}")
print(r.id, flush=True)
try:
    r.get(timeout=30)
    print("no error")
except Exception as e:
    print(type(e).__name__, e)
"#,
        broker = common::broker_url(),
        queue = c.queue,
    );
    let mut client = std::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let id = lines.next().expect("the job id").expect("a line");
    let said = stack.ok(&["jobs", "revoke", &id]);
    assert!(said.contains("no such job yet"), "{said}");
    stack.ok(&["queue", "start", "c1"]);
    let answer = lines.next().expect("the answer").expect("a line");
    let _ = client.wait();
    assert!(answer.starts_with("TaskRevokedError"), "{answer}");
    let row = job(stack, &id);
    assert_eq!(row["state"], "REVOKED", "{row}");
    assert!(!c.file("ran").exists(), "the revoked command ran");
    stack.ok(&["server", "stop"]);
}

/// A quorum queue counts a message's returns: a job whose worker dies on it every time is
/// dead-lettered at `delivery_limit`, its job FAILURE naming why; the broker drops nothing.
#[test]
fn a_job_its_worker_dies_on_is_dead_lettered_at_the_delivery_limit() {
    let c = Commands::new(
        r#"queue_type = "quorum"
delivery_limit = 2
[tasks."t.crash"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/runs; kill -9 $PPID"]
"#,
        30.0,
    );
    let stack = &c.stack;
    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.crash"]).trim().to_string();
    for round in 1..=4 {
        eventually(
            Duration::from_secs(20),
            "the worker to die or the job to end",
            || !common::alive(stack.pid_of("c1")) || job(stack, &id)["state"] == "FAILURE",
        );
        if job(stack, &id)["state"] == "FAILURE" {
            break;
        }
        assert!(round < 4, "still not dead-lettered after {round} deaths");
        let _ = stack.cm(&["queue", "start", "c1"]);
    }
    eventually(Duration::from_secs(20), "the job to fail", || {
        job(stack, &id)["state"] == "FAILURE"
    });
    let row = job(stack, &id);
    let error = row["error"].as_str().unwrap_or("");
    assert!(error.contains("delivery_limit 2"), "{row}");
    assert_eq!(runs(&c).len(), 2, "it ran on each delivery below the limit");
    eventually(Duration::from_secs(10), "the dead letter", || {
        common::queue_depth(&format!("{}.dead", c.queue)) == 1
    });
    assert_eq!(common::queue_depth(&c.queue), 0);
    stack.ok(&["server", "stop"]);
}

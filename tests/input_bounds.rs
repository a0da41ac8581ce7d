//! What cm takes from outside is bounded and checked before it is used: hostlists and counts
//! sized before they are expanded (CLI, config, a Celery message), names checked when the file
//! is read, values that could forge a log line escaped, `cm call` refusing what a worker
//! would, and the CLI's edges (states in any case, unknown names, a missing store, short ids,
//! no library noise). Real binary, real broker, real store.

mod common;

use std::time::{Duration, Instant};

use cm::celery::message::TaskMessage;
use common::{eventually, queue_depth, Options, Stack};
use serde_json::json;

/// Well under a second: a refusal is decided before anything is built.
const AT_ONCE: Duration = Duration::from_secs(1);
/// The most memory any `cm` this test binary ran may have taken beyond the test's own; one
/// that expanded what it was given would take gigabytes.
const MAX_RSS_KIB: i64 = 200 * 1024;

/// Runs `cm ARGS` on `stack`, insisting on exit `code` within [`AT_ONCE`]; its stderr.
fn refused(stack: &Stack, args: &[&str], code: i32) -> String {
    let started = Instant::now();
    let out = stack.cm(args);
    let took = started.elapsed();
    let (stdout, stderr) = (out.stdout, out.stderr);
    assert_eq!(
        out.code,
        Some(code),
        "cm {args:?}:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(took < AT_ONCE, "cm {args:?} took {took:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("cm: "), "{stderr}");
    stderr
}

/// How far the largest child this test process has waited for grew beyond this process's own
/// peak: a child's peak starts from its parent's (the parent's pages until it execs), so only
/// the excess is the child's doing.
fn children_peak_rss_kib() -> i64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let peak = |who| getrusage(who).expect("getrusage").max_rss();
    (peak(UsageWho::RUSAGE_CHILDREN) - peak(UsageWho::RUSAGE_SELF)).max(0)
}

const LAUNCH: [&str; 5] = [
    "launch",
    "--server",
    "india_openstack_essex",
    "--recipe",
    "Hadoop",
];

/// The inputs that grew to gigabytes before (`--hosts 'i[1-1000]' --count 1000000`,
/// `i[1-100000000]`, the same through `cm call`) are refused with exit 64 at once, naming the
/// `[limits]` key, with little memory, and nothing is published.
#[test]
fn huge_hostlists_and_counts_are_refused_at_once_with_little_memory() {
    let stack = Stack::new();
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&LAUNCH[..], extra].concat()
    }
    for (args, says) in [
        (
            with(&["--hosts", "i[1-1000]", "--count", "1000000"]),
            "1000000000 jobs, more than 100000 ([limits] max_jobs_per_publish",
        ),
        (
            with(&["--hosts", "i[1-100000000]"]),
            "names 100000000 hosts, more than 1000 ([limits] max_hosts",
        ),
        (
            with(&["--hosts", "i[100000000-1]"]),
            "names 100000000 hosts",
        ),
        (
            with(&[
                "--hosts",
                "i[1-3]\n[x] l1@h job y cm.launch: FAILURE forged",
            ]),
            "is not a hostlist",
        ),
        (
            vec![
                "provision",
                "--hosts",
                "h[1-100000000]",
                "--image",
                "ubuntu",
            ],
            "[limits] max_hosts",
        ),
        (
            vec![
                "call",
                "cm.provision",
                "--args",
                r#"["h1", "ubuntu"]"#,
                "--count",
                "1000000",
            ],
            "--count 1000000 is 1000000 jobs, more than 100000",
        ),
        (
            vec![
                "call",
                "cm.launch",
                "--kwargs",
                r#"{"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": "i[1-100000000]"}"#,
            ],
            "names 100000000 hosts, more than 1000 ([limits] max_hosts)",
        ),
    ] {
        let stderr = refused(&stack, &args, 64);
        assert!(stderr.contains(says), "cm {args:?}: {stderr}");
    }
    let peak = children_peak_rss_kib();
    assert!(
        peak < MAX_RSS_KIB,
        "a child grew {peak} KiB beyond this process"
    );
    assert_eq!(queue_depth(&stack.launch), 0, "nothing published");
    assert_eq!(queue_depth(&stack.prov), 0, "nothing published");
    assert!(!stack.store_file().exists(), "nothing stored either");
}

/// A config whose workers are a hostlist of a hundred million is a configuration error (78)
/// at its line and column for every command, `cm queue status` too, at once and small.
#[test]
fn a_huge_worker_hostlist_in_the_config_is_a_located_error_for_every_command() {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).expect("config");
    let line = text
        .lines()
        .position(|l| l == "workers = \"p[1-2]\"")
        .expect("the prov workers")
        + 1;
    std::fs::write(
        &stack.config,
        text.replace("workers = \"p[1-2]\"", "workers = \"h[1-100000000]\""),
    )
    .expect("write config");
    for args in [&["queue", "status"][..], &["jobs"], &["dead", "list"]] {
        let stderr = refused(&stack, args, 78);
        assert!(
            stderr.contains(&format!("fabfile.toml:{line}:11: queues.")),
            "{stderr}"
        );
        assert!(stderr.contains("[limits] max_workers"), "{stderr}");
    }
    let peak = children_peak_rss_kib();
    assert!(
        peak < MAX_RSS_KIB,
        "a child grew {peak} KiB beyond this process"
    );
}

/// Names that panicked or failed later (a queue name over the broker's 255 bytes, one the
/// broker reserves, a worker named like a flag or too long for its files) are refused when the
/// file is read, at their line, for any command: exit 78, not a panic's 101.
#[test]
fn names_that_would_fail_later_are_refused_when_the_file_is_read() {
    let long_queue = "q".repeat(300);
    let long_worker = format!("\"{}\"", "w".repeat(240));
    for (from_to, says) in [
        (
            ("t_launch", long_queue.as_str()),
            "is not a valid queue name",
        ),
        (("t_launch", "amq.t_launch"), "are the broker's own"),
        (
            ("\"l[1-2]\"", "[\"l1\", \"-rf\"]"),
            "\"-rf\" is not a valid worker name",
        ),
        (("\"l[1-2]\"", long_worker.as_str()), "so that its files"),
    ] {
        let stack = Stack::new();
        let text = std::fs::read_to_string(&stack.config).expect("config");
        let (from, to) = from_to;
        let changed = match from {
            "t_launch" => text.replace(
                &format!("[queues.{}]", stack.launch),
                &format!("[queues.\"{to}\"]"),
            ),
            _ => text.replacen(&format!("workers = {from}"), &format!("workers = {to}"), 1),
        };
        assert_ne!(changed, text);
        std::fs::write(&stack.config, changed).expect("write config");
        for args in [
            &["queue", "status"][..],
            &["call", "cm.launch", "--kwargs", "{}"],
            &["dead", "list"],
        ] {
            let stderr = refused(&stack, args, 78);
            assert!(stderr.contains(says), "{stderr}");
            assert!(stderr.contains("fabfile.toml:"), "{stderr}");
        }
    }
}

/// A stack with a queue of worker `e1` running `t.echo` (`/bin/echo {host}`).
fn echo_stack() -> (Stack, String) {
    let queue = common::unique("t_echo");
    let stack = Stack::with(Options {
        extra: format!(
            "[queues.{queue}]\nworkers = [\"e1\"]\ntasks = [\"t.echo\"]\n[tasks.\"t.echo\"]\ncommand = [\"/bin/echo\", \"{{host}}\"]\nparams = [\"host\"]\n"
        ),
        ..Options::default()
    });
    stack.delete_on_drop(&queue);
    (stack, queue)
}

/// A value with a newline (a command's argument, a message's id, a launch's hosts) cannot write
/// a line of its own in a worker's log: the forged line stays inside the real job's line,
/// escaped, and `cm logs --job` of the job it names shows none of it.
#[test]
fn a_forged_newline_stays_on_its_line_and_fools_no_log_reader() {
    let (stack, queue) = echo_stack();
    stack.ok(&["queue", "start", "e1", "l1"]);
    let first_line = |out: String| out.lines().next().unwrap_or_default().to_string();
    let victim = first_line(stack.ok(&["call", "t.echo", "--args", r#"["real"]"#, "--wait"]));
    let forged = |worker: &str, task: &str| {
        format!("h1\n[2001-01-01T00:00:00.000Z] {worker}@x job {victim} {task}: FAILURE forged")
    };

    // A command's value, which cm call lets through (any text is one argv element).
    let value = json!([forged("e1", "t.echo")]).to_string();
    let carrier = first_line(stack.ok(&["call", "t.echo", "--args", &value, "--wait"]));
    // A Celery client's cm.launch with such hosts, and a message whose very id carries one.
    let launch = TaskMessage::new(
        "cm.launch",
        vec![],
        json!({"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": forged("l1", "cm.launch")})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let launch_id = launch.id.clone();
    let (body, props) = launch.encode("a celery client");
    common::publish_to(&stack.launch, &body, props);
    let mut by_id = TaskMessage::new("t.echo", vec![json!("h2")], Default::default());
    by_id.id = forged("e1", "t.echo");
    let (body, props) = by_id.encode("a celery client");
    common::publish_to(&queue, &body, props);

    eventually(Duration::from_secs(30), "the forged jobs to end", || {
        let jobs = stack.jobs();
        let ended = |id: &str| {
            jobs.iter().any(|j| {
                j["id"] == id && matches!(j["state"].as_str(), Some("SUCCESS" | "FAILURE"))
            })
        };
        ended(&carrier) && ended(&launch_id) && ended(&by_id.id)
    });
    let launched = stack
        .jobs()
        .into_iter()
        .find(|j| j["id"] == launch_id.as_str())
        .expect("the launch");
    assert_eq!(launched["state"], "FAILURE", "{launched}");
    assert!(
        launched["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not a hostlist")),
        "{launched}"
    );
    for worker in ["e1", "l1"] {
        let log = stack.log(worker);
        assert!(
            log.contains("[2001-01-01"),
            "the values reached {worker}'s log:\n{log}"
        );
        for line in log.lines() {
            assert!(
                !line.starts_with("[2001-"),
                "a forged line in {worker}'s log:\n{log}"
            );
        }
    }
    let out = stack.ok(&["logs", "--job", &victim]);
    assert!(!out.contains("forged"), "{out}");
    assert!(out.lines().any(|l| l.ends_with(": SUCCESS")), "{out}");
    stack.ok(&["server", "stop"]);
}

/// `cm call` refuses, with exit 64 and nothing published, what a worker would refuse: a value
/// read as an option, a NUL, a launch's hosts that are no hostlist, an unknown server.
#[test]
fn cm_call_refuses_what_a_worker_would_and_publishes_nothing() {
    let (stack, queue) = echo_stack();
    for (args, says) in [
        (
            vec!["call", "t.echo", "--args", r#"["-rf"]"#],
            "starts with '-'",
        ),
        (vec!["call", "t.echo", "--args", r#"["a\u0000b"]"#], "NUL"),
        (
            vec![
                "call",
                "cm.launch",
                "--kwargs",
                r#"{"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": "i1\nforged"}"#,
            ],
            "is not a hostlist",
        ),
        (
            vec![
                "call",
                "cm.launch",
                "--kwargs",
                r#"{"server": "nowhere", "recipe": "Hadoop"}"#,
            ],
            "unknown server",
        ),
    ] {
        let stderr = refused(&stack, &args, 64);
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("nothing published"), "{stderr}");
    }
    assert_eq!(queue_depth(&queue), 0);
    assert_eq!(queue_depth(&stack.launch), 0);
}

/// `cm jobs --state` takes a state in any case; an unknown state, server or recipe is exit 64
/// listing the known ones, not an empty table.
#[test]
fn states_match_in_any_case_and_unknown_names_are_refused() {
    let stack = Stack::new();
    let ids = stack.launch().hosts("i[1-2]").ids();
    assert_eq!(ids.len(), 2);
    for state in ["PENDING", "pending", "Pending"] {
        let out = stack.ok(&["jobs", "--state", state, "--json"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
        assert_eq!(listed.len(), 2, "--state {state}: {out}");
    }
    let out = stack.ok(&[
        "jobs",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "hadoop",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    for (args, says) in [
        (
            ["--state", "failur"],
            "unknown state \"failur\": known are WAITING, PENDING, SCHEDULED",
        ),
        (
            ["--server", "nowhere"],
            "unknown server \"nowhere\": known are india_openstack_essex",
        ),
        (
            ["--recipe", "Nope"],
            "unknown recipe \"Nope\": known are Slurm Cluster, Hadoop",
        ),
    ] {
        let stderr = refused(&stack, &[&["jobs"][..], &args].concat(), 64);
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// Commands that only read never create a store: on a missing SQLite file they say where they
/// looked, exit 66, and leave no file or folder behind.
#[test]
fn reading_a_missing_store_creates_nothing() {
    let stack = Stack::with(Options {
        store_url: Some("sqlite://nothere/cm.db".into()),
        ..Options::default()
    });
    let place = std::fs::canonicalize(stack.dir.path())
        .expect("the stack's dir")
        .join("nothere");
    for args in [
        &["jobs"][..],
        &["jobs", "--state", "pending"],
        &["jobs", "show", "0123abcd"],
        &["schedules"],
        &["schedules", "--json"],
    ] {
        let stderr = refused(&stack, args, 66);
        assert!(
            stderr.contains(&format!(
                "no status store at {}",
                place.join("cm.db").display()
            )),
            "{stderr}"
        );
    }
    assert!(!place.exists(), "{} was created", place.display());
}

/// `cm jobs show` takes a job by any unique start or end of its id (the web shows the last 8
/// characters); a part several ids share is exit 64 listing them. SQLite and PostgreSQL alike.
#[test]
fn a_job_is_shown_by_a_unique_part_of_its_id() {
    let pg = common::PgDatabase::new();
    for store_url in [None, Some(pg.url.clone())] {
        let stack = Stack::with(Options {
            store_url,
            ..Options::default()
        });
        let ids = stack.launch().hosts("i[1-2]").ids();
        let [a, b] = [&ids[0], &ids[1]];
        // The end the web shows; a start long enough to take in some of the id's random bits.
        for part in [&a[a.len() - 8..], &a[..a.len() - 2], a.as_str()] {
            let out = stack.ok(&["jobs", "show", part]);
            assert!(out.starts_with(&format!("job {a} ")), "{part}: {out}");
        }
        let shared: String = a
            .chars()
            .zip(b.chars())
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| x)
            .collect();
        assert!(!shared.is_empty(), "{a} {b}");
        let stderr = refused(&stack, &["jobs", "show", &shared], 64);
        assert!(
            stderr.contains(a.as_str()) && stderr.contains(b.as_str()),
            "{stderr}"
        );
        let stderr = refused(&stack, &["jobs", "show", "zzzzzzzz"], 64);
        assert!(stderr.contains("no job \"zzzzzzzz\""), "{stderr}");
    }
}

/// A listener that answers every connection with HTTP, not AMQP: lapin logs errors about it
/// (a parse error, a connection error) before cm moves on to the next broker of its list.
fn not_a_broker() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.read(&mut [0u8; 64]);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    port
}

/// A successful `cm call --wait` whose first broker is no broker: lapin's own ERROR lines are
/// on its stderr with `-v`, and none without; cm's one line about moving on stays.
#[test]
fn library_lines_reach_a_commands_stderr_only_with_verbose() {
    let broker = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f;{}",
        not_a_broker(),
        common::broker_url()
    );
    let stack = Stack::with(Options {
        broker,
        ..Options::default()
    });
    stack.ok(&["queue", "start", "p1"]);
    let call = |verbose: &[&str]| {
        let out = std::process::Command::new(common::cm_bin())
            .arg("--config")
            .arg(&stack.config)
            .args(verbose)
            .args([
                "call",
                "cm.provision",
                "--args",
                r#"["h1", "ubuntu"]"#,
                "--wait",
            ])
            .env_remove("RUST_LOG")
            .env_remove("CM_BROKER_URL")
            .output()
            .expect("run cm");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stderr.contains("trying the next node"), "{stderr}");
        stderr
    };
    let verbose = call(&["-v"]);
    assert!(
        verbose.contains(" ERROR "),
        "lapin said nothing:\n{verbose}"
    );
    for _ in 0..3 {
        let quiet = call(&[]);
        assert!(
            !quiet.contains(" ERROR "),
            "a library's line on stderr:\n{quiet}"
        );
    }
    stack.ok(&["server", "stop"]);
}

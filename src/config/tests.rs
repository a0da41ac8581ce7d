use super::*;

const MINIMAL: &str = r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[paths]
pid_dir = "var/run"
log_dir = "var/log"
[queues.provisioner]
workers = "p[1-2]"
tasks = ["cm.provision"]
concurrency = 1
[queues.launcher]
workers = ["l1", "l2"]
tasks = ["cm.launch"]
concurrency = 1
[simulation]
step_seconds = [0, 0]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/cm/fabfile.toml"), text)
}

#[test]
fn minimal_file_gets_defaults_and_expands_hostlists() -> Result<(), ConfigError> {
    let c = parse(MINIMAL)?;
    let names: Vec<_> = c
        .workers()
        .map(|w| (w.name, w.queue.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("p1", "provisioner"),
            ("p2", "provisioner"),
            ("l1", "launcher"),
            ("l2", "launcher")
        ]
    );
    assert_eq!(c.pid_file("p1"), Path::new("/etc/cm/var/run/celery@p1.pid"));
    assert_eq!(c.stop_grace, Duration::from_secs(30));
    assert_eq!(
        c.queue_for_task("cm.launch").map(|q| q.name.as_str()),
        Some("launcher")
    );
    assert!(c.servers.contains_key("india_openstack_essex"));
    assert_eq!(c.recipes.len(), 4);
    Ok(())
}

#[test]
fn send_events_is_off_unless_set() -> Result<(), ConfigError> {
    assert!(!parse(MINIMAL)?.send_events);
    let on = format!("[worker]\nsend_events = true\n{MINIMAL}");
    assert!(parse(&on)?.send_events);
    let bad = format!("[worker]\nsend_events = 1\n{MINIMAL}");
    let msg = parse(&bad).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("send_events") || msg.contains("bool"), "{msg}");
    Ok(())
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace(
        "concurrency = 1\n[queues.launcher]",
        "concurency = 1\n[queues.launcher]",
    );
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("concurency"), "{msg}");
    assert!(msg.starts_with("/etc/cm/fabfile.toml:10:1:"), "{msg}");
}

#[test]
fn malformed_toml_reports_line_and_column() {
    let msg = parse("[broker]\nurl = \"amqp://x\n")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("/etc/cm/fabfile.toml:2:"), "{msg}");
}

#[test]
fn duplicate_workers_across_queues_are_refused() {
    let text = MINIMAL.replace("workers = [\"l1\", \"l2\"]", "workers = [\"l1\", \"p2\"]");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.contains("\"p2\" is also in queues.provisioner"),
        "{msg}"
    );
}

#[test]
fn empty_queue_list_and_bad_hostlist_are_refused() {
    let msg = parse("[broker]\n").map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("no queues configured"), "{msg}");
    let text = MINIMAL.replace("p[1-2]", "p[1-");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("bad hostlist"), "{msg}");
}

/// Each number outside its range is refused at its place, by key and range; none panics.
#[test]
fn numbers_out_of_range_name_the_key_and_the_range() {
    for (from, to, expected) in [
        (
            "concurrency = 1\n[queues.launcher]",
            "concurrency = 0\n[queues.launcher]",
            "queues.provisioner.concurrency must be from 1 to 10000 (got 0)",
        ),
        (
            "[simulation]",
            "[worker]\nstop_grace_seconds = 1e99\n[simulation]",
            "worker.stop_grace_seconds must be from 0 to 86400 (got 1e99)",
        ),
        (
            "[simulation]",
            "[worker]\nstart_timeout_seconds = inf\n[simulation]",
            "worker.start_timeout_seconds must be from 0 to 86400 (got inf)",
        ),
        (
            "concurrency = 1\n[simulation]",
            "concurrency = 1\nprefetch = 70000\nretry_backoff_seconds = nan\n[simulation]",
            "queues.launcher.prefetch must be from 1 to 65535 (got 70000)",
        ),
        (
            "concurrency = 1\n[simulation]",
            "concurrency = 1\nretry_backoff_seconds = -0.5\n[simulation]",
            "queues.launcher.retry_backoff_seconds must be from 0 to 86400 (got -0.5)",
        ),
        (
            "concurrency = 1\n[simulation]",
            "concurrency = 1\nretries = -1\n[simulation]",
            "queues.launcher.retries must be from 0 to 10000 (got -1)",
        ),
        (
            "step_seconds = [0, 0]",
            "step_seconds = [0, 1e300]",
            "simulation.step_seconds must be [min, max] with 0 <= min <= max <= 86400",
        ),
        (
            "step_seconds = [0, 0]",
            "step_seconds = [0, 0]\nfailure_rate = 1.5",
            "simulation.failure_rate must be from 0 to 1 (got 1.5)",
        ),
        (
            "step_seconds = [0, 0]",
            "step_seconds = [0, 0]\n[store]\nbusy_timeout_ms = 99999999999",
            "store.busy_timeout_ms must be from 0 to 3600000",
        ),
        (
            "step_seconds = [0, 0]",
            "step_seconds = [0, 0]\n[web]\nmax_hosts = 0",
            "web.max_hosts must be from 1 to 1000000 (got 0)",
        ),
    ] {
        let text = MINIMAL.replacen(from, to, 1);
        assert_ne!(text, MINIMAL, "{from:?} not in the sample");
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains(expected), "{msg}");
        assert!(msg.starts_with("/etc/cm/fabfile.toml:"), "no line: {msg}");
    }
    let text = MINIMAL.replace(
        "[simulation]",
        "[worker]\nstop_grace_seconds = 86400\n[simulation]",
    );
    assert_eq!(
        parse(&text).map(|c| c.stop_grace).ok(),
        Some(Duration::from_secs(86_400))
    );
}

#[test]
fn an_unknown_store_scheme_names_the_key_and_its_line() {
    let text = format!("{MINIMAL}[store]\nurl = \"redis://h\"\n");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.starts_with("/etc/cm/fabfile.toml:18:7: [store] url:"),
        "{msg}"
    );
    assert!(msg.contains("postgres://USER@HOST:5432/DB"), "{msg}");
}

#[test]
fn invalid_broker_url_is_refused() {
    let text = MINIMAL.replace("amqp://guest:guest@127.0.0.1:5672/%2f", "http://nowhere");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("broker.url"), "{msg}");
    assert!(msg.starts_with("/etc/cm/fabfile.toml:3:"), "{msg}");
}

const OPS: &str = r#"
[queues.ops]
workers = "o[1-2]"
tasks = ["ops.backup"]
concurrency = 2
[tasks."ops.backup"]
command = ["/usr/local/bin/backup", "--host", "{host}", "--level", "{level}"]
params = ["host", "level"]
time_limit = 600
cwd = "backups"
env = { BACKUP_TARGET = "s3" }
"#;

#[test]
fn a_command_task_is_read_with_its_params_limits_and_env() -> Result<(), ConfigError> {
    let c = parse(&format!("{MINIMAL}{OPS}"))?;
    let spec = c.tasks.get("ops.backup").expect("the task");
    assert_eq!(spec.params, ["host", "level"]);
    assert!(spec.positional);
    assert_eq!(spec.template.placeholders(), ["host", "level"]);
    assert_eq!(spec.time_limit, Some(Duration::from_secs(600)));
    assert_eq!(spec.kill_grace, Duration::from_secs(10));
    assert_eq!(spec.cwd.as_deref(), Some(Path::new("/etc/cm/backups")));
    assert_eq!(spec.env, [("BACKUP_TARGET".to_string(), "s3".to_string())]);
    assert!(!spec.allow_options);
    assert!(
        !spec.keep_children,
        "a command's leftovers are stopped by default"
    );
    assert_eq!(
        c.queue_for_task("ops.backup").map(|q| q.name.as_str()),
        Some("ops")
    );
    let kept = parse(&format!(
        "{MINIMAL}{}",
        OPS.replace("time_limit = 600", "keep_children = true")
    ))?;
    assert!(kept
        .tasks
        .get("ops.backup")
        .is_some_and(|t| t.keep_children));
    let wrong = OPS.replace("time_limit = 600", "keep_children = \"yes\"");
    let msg = parse(&format!("{MINIMAL}{wrong}"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    // Named by its line and column, as every mistyped value is.
    assert!(
        msg.starts_with("/etc/cm/fabfile.toml:") && msg.contains("expected a boolean"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn command_mistakes_are_named_with_their_line() {
    let with = |from: &str, to: &str| {
        let text = format!("{MINIMAL}{OPS}").replacen(from, to, 1);
        parse(&text).map(|_| ()).unwrap_err().to_string()
    };
    let msg = with(r#"params = ["host", "level"]"#, r#"params = ["host"]"#);
    assert!(
        msg.contains(r#"tasks."ops.backup".command: {level} is not in its params [host]"#),
        "{msg}"
    );
    assert!(msg.starts_with("/etc/cm/fabfile.toml:23:11:"), "{msg}");
    let msg = with(r#"tasks = ["ops.backup"]"#, r#"tasks = ["ops.bakup"]"#);
    assert!(
        msg.contains(r#"queues.ops.tasks: "ops.bakup" is no task"#),
        "{msg}"
    );
    let msg = with(
        "[tasks.\"ops.backup\"]",
        "[tasks.\"ops.restore\"]\ncommand = [\"/bin/true\"]\n[tasks.\"ops.backup\"]",
    );
    assert!(msg.contains("no queue lists it"), "{msg}");
    let msg = with("time_limit = 600", "time_limit = 0");
    assert!(
        msg.contains("time_limit must be from 0.001 to 604800"),
        "{msg}"
    );
    let msg = with("{level}\"]", "{level\"]");
    assert!(msg.contains("an unclosed '{'"), "{msg}");
    let msg = with("BACKUP_TARGET", "CM_JOB_ID");
    assert!(msg.contains("CM_ variables are cm's own"), "{msg}");
    let text = format!("{MINIMAL}{OPS}")
        .replace("[tasks.\"ops.backup\"]", "[tasks.\"cm.launch\"]")
        .replace("tasks = [\"ops.backup\"]", "tasks = [\"cm.launch\"]");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("is cm's own"), "{msg}");
}

#[test]
fn a_tasks_unique_key_and_retry_policy_are_read_and_their_mistakes_named() {
    let policy = "unique = \"{host}:{level}\"\nunique_while = \"queued\"\nretries = 3\nretry_backoff = 2\nretry_max_delay = 30\nretry_jitter = true\nretry_on_exit = [75, 111]\n";
    let with = |keys: &str| parse(&format!("{MINIMAL}{OPS}{keys}"));
    let c = with(policy).expect("valid");
    let p = &c.tasks.get("ops.backup").expect("the task").policy;
    let unique = p.unique.as_ref().expect("a key");
    assert_eq!(unique.hold, crate::store::UNIQUE_QUEUED);
    let values = crate::jobs::args::Bound::of([("host", "h1".into()), ("level", "full".into())]);
    assert_eq!(unique.key("ops.backup", &values), "ops.backup:h1:full");
    assert_eq!(p.retry.retries, Some(3));
    assert_eq!(p.retry.backoff, Some(Duration::from_secs(2)));
    assert_eq!(p.retry.max_delay, Some(Duration::from_secs(30)));
    assert!(p.retry.jitter);
    assert_eq!(p.retry.on_exit, Some(vec![75, 111]));
    // Held until the end unless it says otherwise.
    let c = with("unique = \"{host}\"\n").expect("valid");
    let p = &c.tasks.get("ops.backup").expect("the task").policy;
    assert_eq!(
        p.unique.as_ref().map(|u| u.hold),
        Some(crate::store::UNIQUE_UNFINISHED)
    );
    for (keys, expected) in [
        (
            "unique = \"{disk}\"\n",
            "unique: {disk} is not one of its params [host, level]",
        ),
        (
            "unique_while = \"queued\"\n",
            "unique_while: no unique key to hold",
        ),
        (
            "unique = \"{host}\"\nunique_while = \"running\"\n",
            "unique_while must be \"queued\"",
        ),
        (
            "retry_on_exit = [0]\n",
            "retry_on_exit: 0 is not an exit code that fails",
        ),
        (
            "retry_backoff = -1\n",
            "retry_backoff must be from 0 to 86400",
        ),
    ] {
        let msg = with(keys).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains(expected), "{keys}: {msg}");
        assert!(msg.starts_with("/etc/cm/fabfile.toml:"), "no line: {msg}");
    }
    // A simulated recipe has nothing to hold a key or retry by its own policy: said, not ignored.
    let msg = parse(&format!("{MINIMAL}[recipes.Sim]\nunique = \"{{host}}\"\n"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unique and retry keys apply to a command"),
        "{msg}"
    );
}

#[test]
fn recipes_and_provisioning_may_run_commands_with_their_own_values() {
    let text = format!(
        "{MINIMAL}[recipes.Hadoop]\ndescription = \"real\"\ncommand = [\"/opt/deploy\", \"{{recipe}}\", \"{{host}}\"]\n[recipes.Sim]\ndescription = \"simulated\"\n[provision]\ncommand = [\"/opt/prov\", \"{{host}}\", \"{{image}}\"]\ntime_limit = 30\n"
    );
    let c = parse(&text).expect("valid");
    let hadoop = c.recipes.get("Hadoop").expect("Hadoop");
    assert_eq!(hadoop.description, "real");
    assert!(hadoop.command.is_some());
    assert!(c.recipes.get("Sim").is_some_and(|r| r.command.is_none()));
    let prov = c.provision.as_ref().expect("a provision command");
    assert_eq!(prov.params, ["host", "image"]);
    let bad = text.replace("{{host}}\"]\n[recipes.Sim]", "{{flavor}}\"]\n[recipes.Sim]");
    let bad = bad.replace("{host}\"]\n[recipes.Sim]", "{flavor}\"]\n[recipes.Sim]");
    let msg = parse(&bad).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.contains(r#"recipes."Hadoop".command: {flavor} has no value here"#),
        "{msg}"
    );
}

#[test]
fn the_broker_may_be_a_list_of_nodes_each_checked() -> Result<(), ConfigError> {
    let list = MINIMAL.replace(
        "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        "url = [\"amqp://guest:guest@10.0.0.1:5672/%2f\", \"amqp://guest:guest@10.0.0.2:5672/%2f\"]",
    );
    let c = parse(&list)?;
    assert_eq!(
        crate::config::urls::split_urls(&c.broker_url),
        [
            "amqp://guest:guest@10.0.0.1:5672/%2f",
            "amqp://guest:guest@10.0.0.2:5672/%2f"
        ]
    );
    let bad = list.replace("10.0.0.2:5672", "10.0.0.2:port");
    let msg = parse(&bad).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("broker.url: invalid AMQP URL"), "{msg}");
    assert!(msg.contains("10.0.0.2:port"), "{msg}");
    assert!(!msg.contains("guest@"), "the password shows: {msg}");
    Ok(())
}

/// Names the broker, a file name or a worker's argv would refuse later are refused at their
/// line: a long or reserved queue name, a worker named like a flag, one too long for a file.
#[test]
fn names_that_would_fail_later_are_refused_at_their_line() {
    let long_queue = "q".repeat(300);
    let long_worker = "w".repeat(240);
    for (from, to, expected, line) in [
        (
            "[queues.launcher]",
            format!("[queues.{long_queue}]"),
            "is not a valid queue name: 300 bytes; at most 250",
            11,
        ),
        (
            "[queues.launcher]",
            "[queues.\"amq.launcher\"]".to_string(),
            "names starting with \"amq.\" are the broker's own",
            11,
        ),
        (
            "workers = [\"l1\", \"l2\"]",
            "workers = [\"l1\", \"-rf\"]".to_string(),
            "\"-rf\" is not a valid worker name: letters, digits",
            12,
        ),
        (
            "workers = [\"l1\", \"l2\"]",
            format!("workers = [\"{long_worker}\"]"),
            "240 bytes; at most 234, so that its files",
            12,
        ),
        (
            "workers = [\"l1\", \"l2\"]",
            "workers = [\"l/1\"]".to_string(),
            "\"l/1\" is not a valid worker name",
            12,
        ),
        (
            "workers = [\"l1\", \"l2\"]",
            "workers = [\"l\\n1\"]".to_string(),
            "is not a valid worker name",
            12,
        ),
        (
            "workers = [\"l1\", \"l2\"]",
            "workers = [\"l1\", \"l1\"]".to_string(),
            "worker \"l1\" is listed twice",
            12,
        ),
    ] {
        let text = MINIMAL.replacen(from, &to, 1);
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains(expected), "{msg}");
        let at = format!("/etc/cm/fabfile.toml:{line}:");
        assert!(msg.starts_with(&at), "not at line {line}: {msg}");
    }
    let host = format!("[worker]\nnode_host = \"{}\"\n{MINIMAL}", "h".repeat(250));
    let msg = parse(&host).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("remote-control queue"), "{msg}");
}

/// A hostlist of workers is sized before it is expanded: a typo of a hundred million names is
/// refused at once, at its place, naming `[limits] max_workers`.
#[test]
fn a_huge_worker_hostlist_is_refused_before_it_is_expanded() {
    let started = std::time::Instant::now();
    let text = MINIMAL.replace("p[1-2]", "h[1-100000000]");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_millis(500), "{msg}");
    assert!(msg.starts_with("/etc/cm/fabfile.toml:8:11:"), "{msg}");
    assert!(
        msg.contains("100000000 workers, more than the 1000 of [limits] max_workers"),
        "{msg}"
    );
    // Counted over the whole file: 2 + 2 is over a limit of 3.
    let text = format!("[limits]\nmax_workers = 3\n{MINIMAL}");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("queues.launcher.workers: 4 workers"), "{msg}");
    let text = MINIMAL.replace("p[1-2]", "p[1-");
    let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("bad hostlist \"p[1-\""), "{msg}");
}

#[test]
fn limits_have_defaults_ranges_and_the_web_follows_them() -> Result<(), ConfigError> {
    let c = parse(MINIMAL)?;
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.web_max_hosts, c.limits.max_hosts);
    let text = format!("[limits]\nmax_hosts = 7\nmax_jobs_per_publish = 70\n{MINIMAL}");
    let c = parse(&text)?;
    assert_eq!((c.limits.max_hosts, c.web_max_hosts), (7, 7));
    assert_eq!(c.limits.max_jobs_per_publish, 70);
    let text = format!("[web]\nmax_hosts = 5\n[limits]\nmax_hosts = 7\n{MINIMAL}");
    assert_eq!(parse(&text)?.web_max_hosts, 5);
    for (key, value) in [
        ("max_hosts", "0"),
        ("max_jobs_per_publish", "100000000"),
        ("max_workers", "-1"),
    ] {
        let text = format!("[limits]\n{key} = {value}\n{MINIMAL}");
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(
            msg.starts_with("/etc/cm/fabfile.toml:2:")
                && msg.contains(&format!("limits.{key} must be from")),
            "{msg}"
        );
    }
    Ok(())
}

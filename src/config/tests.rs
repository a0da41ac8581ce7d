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

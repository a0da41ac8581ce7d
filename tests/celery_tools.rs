//! Celery's own tools against real cm workers on the real broker: the `celery` CLI's inspect
//! and control commands, an `EventReceiver` capturing the events, and Flower's HTTP API. All
//! from bench/.venv (scripts/ensure-celery-venv.sh, which `make test` runs). Each test has its
//! own queues and its own node host, so its node names (`l1@<host>`) are nobody else's.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn venv_bin(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/.venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: `make test` installs Celery and Flower (scripts/ensure-celery-venv.sh)",
        path.display()
    );
    path
}

/// kombu's spelling of the test broker (it writes the vhost `/` as `%2F` or `//`).
fn kombu_url() -> String {
    broker_url().replace("%2f", "%2F")
}

/// A stack whose workers are `<name>@<a host of its own>`, with `worker_extra` added.
fn stack(step_seconds: (f64, f64), worker_extra: &str) -> (Stack, String) {
    let host = unique("cthost").replace('_', "-");
    let stack = Stack::with(Options {
        step_seconds,
        worker_extra: format!("allow_root = true\nnode_host = \"{host}\"\n{worker_extra}"),
        ..Options::default()
    });
    (stack, host)
}

/// `celery -b URL ARGS`, run to completion.
fn celery(args: &[&str]) -> Output {
    Command::new(venv_bin("celery"))
        .arg("-b")
        .arg(kombu_url())
        .args(args)
        .output()
        .expect("run celery")
}

/// `celery -b URL ARGS --json -d NODE -t 10`, which must succeed: the node's reply, parsed.
/// `inspect` prints `{node: reply}`, `control` a list of them (`[{node: reply}]`).
fn ask(node: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "-d", node, "-t", "10"]);
    let out = celery(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "celery {all:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("celery {all:?} printed no JSON ({e}):\n{stdout}"));
    let mine = match &replies {
        Value::Array(list) => list.iter().find_map(|r| r.get(node)),
        other => other.get(node),
    };
    mine.cloned()
        .unwrap_or_else(|| panic!("celery {all:?}: no reply from {node}:\n{stdout}"))
}

/// `cm launch` of one job per host in `hosts`; returns the ids.
fn launch(stack: &Stack, hosts: &str, wait: bool) -> Vec<String> {
    let mut args = vec![
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--hosts",
        hosts,
        "--quiet",
    ];
    if wait {
        args.push("--wait");
    }
    stack.publish(&args)
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn celery_inspect_sees_a_cm_worker_ping_stats_registered_queues_conf() {
    let (stack, host) = stack((0.0, 0.0), "");
    let node = format!("l1@{host}");
    stack.ok(&["queue", "start", "l1"]);
    let pid = stack.pid_of("l1");
    launch(&stack, "a[1-3]", true);

    assert_eq!(
        ask(&node, &["inspect", "ping"]),
        serde_json::json!({"ok": "pong"})
    );

    let stats = ask(&node, &["inspect", "stats"]);
    assert_eq!(stats["pid"], pid, "{stats}");
    assert_eq!(stats["total"]["cm.launch"], 3, "{stats}");
    assert!(stats["broker"].is_object(), "Flower needs a dict: {stats}");
    assert_eq!(stats["broker"]["transport"], "amqp");
    assert!(
        !stats.to_string().contains("guest:guest"),
        "no password: {stats}"
    );
    assert_eq!(stats["prefetch_count"], 4, "4 x concurrency 1: {stats}");
    assert_eq!(stats["pool"]["max-concurrency"], 1);
    assert!(stats["uptime"].as_u64().is_some(), "{stats}");
    let clock: u64 = stats["clock"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(clock > 0, "a Lamport clock that moved: {stats}");

    assert_eq!(
        ask(&node, &["inspect", "registered"]),
        serde_json::json!(["cm.launch", "cm.provision"])
    );
    let queues = ask(&node, &["inspect", "active_queues"]);
    assert_eq!(queues[0]["name"], stack.launch.as_str(), "{queues}");
    assert_eq!(queues[0]["durable"], true);
    for empty in ["reserved", "scheduled", "revoked", "active"] {
        assert_eq!(
            ask(&node, &["inspect", empty]),
            serde_json::json!([]),
            "{empty}"
        );
    }
    let conf = ask(&node, &["inspect", "conf"]);
    assert_eq!(conf["worker_concurrency"], 1, "{conf}");
    let later = ask(&node, &["inspect", "clock"])["clock"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        later > clock,
        "the clock moves on with every message: {later} after {clock}"
    );

    // `celery status`: the worker is online, by its node name.
    let out = celery(&["status", "-d", &node, "-t", "10"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{node}: OK")), "{text}");
    assert!(text.contains("1 node online."), "{text}");

    // What cm does not do is an error reply, not silence and not a crash.
    let grow = ask(&node, &["control", "pool_grow", "1"]);
    assert!(
        grow["error"]
            .as_str()
            .is_some_and(|e| e.contains("pool_grow")),
        "{grow}"
    );
    // Revoke and terminate answer in Celery's words; the ids are kept (`inspect revoked`).
    assert_eq!(
        ask(&node, &["control", "revoke", "some-id"]),
        serde_json::json!({"ok": "tasks {'some-id'} flagged as revoked"})
    );
    assert_eq!(
        ask(&node, &["control", "terminate", "SIGTERM", "other-id"]),
        serde_json::json!({"ok": "terminate: tasks unknown"}),
        "nothing of that id runs here"
    );
    let bad = ask(&node, &["control", "terminate", "SIGSTOP", "third-id"]);
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("STOP")),
        "{bad}"
    );
    assert_eq!(
        ask(&node, &["inspect", "revoked"]),
        serde_json::json!(["some-id", "other-id"])
    );
    // A message that is no request is dropped; the worker answers the next one.
    runtime().block_on(async {
        let conn =
            lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        for garbage in [&b"not json"[..], b"[1, 2]", b"{\"method\": 7}"] {
            ch.basic_publish(
                "celery.pidbox".into(),
                "".into(),
                Default::default(),
                garbage,
                Default::default(),
            )
            .await
            .expect("publish");
        }
        let _ = conn.close(200, "".into()).await;
    });
    assert_eq!(ask(&node, &["inspect", "ping"])["ok"], "pong");
    assert!(alive(pid), "the worker survived the garbage");
}

#[test]
fn celery_inspect_active_shows_the_running_job() {
    let (stack, host) = stack((1.0, 1.0), "");
    let node = format!("l1@{host}");
    stack.ok(&["queue", "start", "l1"]);
    let pid = stack.pid_of("l1");
    let ids = launch(&stack, "slow1", false);
    let id = ids.first().expect("a job id").clone();

    // Three 1 s steps: the job runs for about 3 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let active = loop {
        let active = ask(&node, &["inspect", "active"]);
        if active.as_array().is_some_and(|a| !a.is_empty()) {
            break active;
        }
        assert!(Instant::now() < deadline, "the job never showed as active");
        std::thread::sleep(Duration::from_millis(100));
    };
    let job = &active[0];
    assert_eq!(job["id"], id.as_str(), "{active}");
    assert_eq!(job["name"], "cm.launch");
    assert_eq!(job["type"], "cm.launch");
    assert_eq!(job["hostname"], node.as_str());
    assert_eq!(job["worker_pid"], pid);
    assert_eq!(job["kwargs"]["hosts"], "slow1", "{job}");
    assert_eq!(
        job["acknowledged"], false,
        "cm acks after the final state is stored"
    );
    assert_eq!(job["delivery_info"]["routing_key"], stack.launch.as_str());
    assert_eq!(job["delivery_info"]["redelivered"], false);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let started = job["time_start"].as_f64().unwrap_or(0.0);
    assert!(
        now - started < 10.0 && now >= started - 1.0,
        "{started} vs {now}"
    );
    assert_eq!(ask(&node, &["inspect", "stats"])["total"]["cm.launch"], 1);

    eventually(Duration::from_secs(20), "the job to end", || {
        ask(&node, &["inspect", "active"]) == serde_json::json!([])
    });
}

#[test]
fn celery_control_switches_events_and_shuts_the_worker_down_warmly() {
    let (stack, host) = stack((0.0, 0.0), "");
    let node = format!("l1@{host}");
    stack.ok(&["queue", "start", "l1"]);
    let pid = stack.pid_of("l1");
    for (command, said) in [
        ("enable_events", "task events enabled"),
        ("enable_events", "task events already enabled"),
        ("disable_events", "task events disabled"),
        ("disable_events", "task events already disabled"),
    ] {
        assert_eq!(ask(&node, &["control", command])["ok"], said, "{command}");
    }
    assert_eq!(ask(&node, &["control", "heartbeat"]), Value::Null);

    // As a Celery worker, a cm worker stops without replying: the CLI says nobody did (69).
    let out = celery(&["control", "shutdown", "-d", &node, "-t", "2"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    eventually(Duration::from_secs(10), "the worker to stop", || {
        !alive(pid)
    });
    assert!(!stack.pid_file("l1").exists(), "its pid file goes");
    let log = stack.log("l1");
    assert!(log.contains("remote shutdown: warm shutdown"), "{log}");
    assert!(log.contains("stopped: 0 job(s) done"), "{log}");
    let out = celery(&["inspect", "ping", "-d", &node, "-t", "1"]);
    assert!(!out.status.success(), "nobody answers any more");
}

/// Prints each event of `node` as a JSON line after `READY`; ends at its `worker-offline`.
const CAPTURE: &str = r#"
import json, sys, threading
from celery import Celery
broker, node, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
app = Celery(broker=broker)
with app.connection() as conn:
    recv = app.events.Receiver(conn, handlers={})
    def on(event):
        if event.get("hostname") != node:
            return
        print(json.dumps(event), flush=True)
        if event["type"] == "worker-offline":
            recv.should_stop = True
    recv.handlers["*"] = on
    ready = recv.on_consume_ready
    def on_ready(*a, **kw):
        ready(*a, **kw)
        print("READY", flush=True)
    recv.on_consume_ready = on_ready
    def give_up():
        recv.should_stop = True
    threading.Timer(limit, give_up).start()
    for _ in recv.consume(safety_interval=0.2, wakeup=False):
        pass
"#;

#[test]
fn an_event_receiver_sees_the_worker_and_its_tasks() {
    let (stack, host) = stack((0.0, 0.0), "send_events = true");
    let node = format!("l1@{host}");
    let mut capture = Command::new(venv_bin("python"))
        .args(["-c", CAPTURE, &kombu_url(), &node, "40"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the event receiver");
    let stdout = capture.stdout.take().expect("its stdout");
    let capture = Killed(capture);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(20)).ok().as_deref(),
        Some("READY")
    );

    stack.ok(&["queue", "start", "l1"]);
    let pid = stack.pid_of("l1");
    let with_events = launch(&stack, "e1", true);
    assert_eq!(
        ask(&node, &["control", "disable_events"])["ok"],
        "task events disabled"
    );
    let without = launch(&stack, "e2", true);
    // One heartbeat now, rather than waiting out the 2 s.
    ask(&node, &["control", "heartbeat"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events: Vec<Value> = Vec::new();
    while !events.iter().any(|e| e["type"] == "worker-heartbeat") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("a heartbeat within 20 s");
        events.push(serde_json::from_str(&line).expect("an event as JSON"));
    }
    stack.ok(&["queue", "stop", "l1"]);
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        events.push(serde_json::from_str(&line).expect("an event as JSON"));
    }
    drop(capture);

    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"worker-online"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"worker-offline"), "{kinds:?}");
    for e in &events {
        assert_eq!(e["hostname"], node.as_str(), "{e}");
        assert_eq!(e["pid"], pid, "{e}");
        assert!(e["clock"].is_u64(), "an integer clock: {e}");
        assert!(e["timestamp"].is_f64(), "{e}");
        assert!(e["utcoffset"].is_i64(), "{e}");
    }
    let clocks: Vec<u64> = events.iter().filter_map(|e| e["clock"].as_u64()).collect();
    assert!(
        clocks.windows(2).all(|w| w[0] < w[1]),
        "clocks rise: {clocks:?}"
    );
    for worker_event in events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("worker-")))
    {
        assert_eq!(worker_event["freq"], 2.0, "{worker_event}");
        assert_eq!(worker_event["sw_ident"], "cm");
        assert_eq!(worker_event["sw_sys"], "Linux");
        assert_eq!(worker_event["loadavg"].as_array().map(Vec::len), Some(3));
        assert!(worker_event["active"].is_u64() && worker_event["processed"].is_u64());
    }
    let offline = events.last().expect("events");
    assert_eq!(offline["processed"], 2, "{offline}");
    assert_eq!(offline["active"], 0);

    let of = |id: &str| -> Vec<&Value> { events.iter().filter(|e| e["uuid"] == id).collect() };
    let task: Vec<&str> = of(&with_events[0])
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(task, ["task-received", "task-started", "task-succeeded"]);
    let received = of(&with_events[0])[0];
    assert_eq!(received["name"], "cm.launch");
    assert!(
        received["kwargs"]
            .as_str()
            .is_some_and(|k| k.contains("e1")),
        "kwargs as repr text: {received}"
    );
    assert_eq!(received["retries"], 0);
    let succeeded = of(&with_events[0])[2];
    assert!(
        succeeded["result"]
            .as_str()
            .is_some_and(|r| r.contains("active")),
        "the result as text: {succeeded}"
    );
    assert!(succeeded["runtime"].as_f64().is_some_and(|r| r >= 0.0));
    assert!(of(&without[0]).is_empty(), "no task events once disabled");
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn flower_shows_the_cm_worker_online_and_a_job_it_ran() {
    let (stack, host) = stack((0.0, 0.0), "");
    let node = format!("l1@{host}");
    stack.ok(&["queue", "start", "l1"]);
    let pid = stack.pid_of("l1");

    let port = free_port();
    let flower = Command::new(venv_bin("celery"))
        .arg(format!("--broker={}", kombu_url()))
        .args(["flower", "--address=127.0.0.1", &format!("--port={port}")])
        .env("FLOWER_UNAUTHENTICATED_API", "true")
        .current_dir(stack.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flower");
    let _flower = Killed(flower);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("http client");
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| -> Option<Value> {
        let resp = http.get(format!("{base}{path}")).send().ok()?;
        resp.status().is_success().then(|| resp.json().ok())?
    };
    eventually(Duration::from_secs(30), "Flower to answer", || {
        http.get(format!("{base}/healthcheck"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });

    // Its inspector asks the worker for stats, queues, tasks... (a reply may lose a race in
    // Flower's first round: ask again).
    let mut worker = Value::Null;
    eventually(
        Duration::from_secs(30),
        "Flower to have the worker's stats",
        || {
            worker = get("/api/workers?refresh=1").map_or(Value::Null, |w| w[&node].clone());
            worker["stats"].is_object()
        },
    );
    assert_eq!(worker["stats"]["pid"], pid, "{worker}");
    assert!(worker["stats"]["broker"].is_object(), "{worker}");
    assert!(worker["stats"]["total"].is_object(), "{worker}");
    // Online: Flower saw a heartbeat lately.
    eventually(
        Duration::from_secs(15),
        "Flower to count the worker online",
        || get("/api/workers?status=1").is_some_and(|s| s[&node] == true),
    );

    // Flower turns task events on by itself, every 5 s.
    eventually(
        Duration::from_secs(20),
        "Flower to enable task events",
        || {
            stack
                .log("l1")
                .contains("task events enabled by remote control")
        },
    );
    let ids = launch(&stack, "f1", true);
    let id = ids.first().expect("a job id").clone();
    let mut task = Value::Null;
    eventually(
        Duration::from_secs(15),
        "Flower to see the job succeed",
        || {
            task = get("/api/tasks").map_or(Value::Null, |t| t[&id].clone());
            task["state"] == "SUCCESS"
        },
    );
    assert_eq!(task["name"], "cm.launch", "{task}");
    assert_eq!(task["worker"], node.as_str(), "{task}");
    assert!(task["runtime"].is_f64(), "{task}");
}

/// A stack as [`stack`]'s with a queue of command tasks too (worker `c1`), `{dir}` in `tasks`
/// replaced by a temp dir of the test's own: (stack, host, queue, dir).
fn command_stack(tasks: &str, worker_extra: &str) -> (Stack, String, String, tempfile::TempDir) {
    let host = unique("cthost").replace('_', "-");
    let queue = unique("t_cmd");
    let dir = tempfile::tempdir().expect("temp dir");
    let listed: Vec<String> = tasks
        .lines()
        .filter_map(|l| l.strip_prefix("[tasks.\"")?.split('"').next())
        .map(|n| format!("{n:?}"))
        .collect();
    let extra = format!(
        "[queues.{queue}]\nworkers = [\"c1\"]\ntasks = [{}]\nconcurrency = 2\n{tasks}",
        listed.join(", ")
    );
    let stack = Stack::with(Options {
        worker_extra: format!("allow_root = true\nnode_host = \"{host}\"\n{worker_extra}"),
        extra: extra.replace("{dir}", &dir.path().display().to_string()),
        ..Options::default()
    });
    stack.delete_on_drop(&queue);
    (stack, host, queue, dir)
}

/// `app.control.revoke(ID, terminate=..., destination=[NODE], reply=True)` from a Celery
/// client: the node's reply.
fn python_revoke(node: &str, id: &str, terminate: bool) -> Value {
    const REVOKE: &str = r#"
import json, sys
from celery import Celery
app = Celery(broker=sys.argv[1])
replies = app.control.revoke(sys.argv[3], terminate=sys.argv[4] == "terminate",
                             destination=[sys.argv[2]], reply=True, timeout=10, limit=1)
print(json.dumps(replies))
"#;
    let how = if terminate { "terminate" } else { "revoke" };
    let out = Command::new(venv_bin("python"))
        .args(["-c", REVOKE, &kombu_url(), node, id, how])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "app.control.revoke failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON from app.control.revoke ({e}):\n{stdout}"));
    replies
        .as_array()
        .and_then(|list| list.iter().find_map(|r| r.get(node)))
        .cloned()
        .unwrap_or_else(|| panic!("no reply from {node}: {stdout}"))
}

fn job_row(stack: &Stack, id: &str) -> Value {
    jobs(stack)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap_or(Value::Null)
}

/// A Celery client's revoke reaches the workers that are not running through the store: the
/// launcher's worker answers it, and the job queued for a worker not yet started never runs.
#[test]
fn app_control_revoke_of_a_job_whose_workers_are_down_keeps_it_from_ever_running() {
    let (stack, host, _queue, dir) = command_stack(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
"#,
        "",
    );
    // Declared by cm, then no worker for it.
    stack.ok(&["queue", "start", "c1"]);
    stack.ok(&["queue", "stop", "c1"]);
    let id = stack.ok(&["call", "t.mark"]).trim().to_string();
    // Only the launcher's worker runs: it is the one Celery's broadcast reaches.
    stack.ok(&["queue", "start", "l1"]);
    let node = format!("l1@{host}");
    assert_eq!(
        python_revoke(&node, &id, false),
        serde_json::json!({"ok": format!("tasks {{'{id}'}} flagged as revoked")})
    );
    let row = job_row(&stack, &id);
    assert_eq!(row["state"], "REVOKED", "queued: revoked at once: {row}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains(&node) && e.contains("remote control")),
        "{row}"
    );
    assert_eq!(
        ask(&node, &["inspect", "revoked"]),
        serde_json::json!([id.as_str()])
    );

    stack.ok(&["queue", "start", "c1"]);
    eventually(
        Duration::from_secs(20),
        "the worker to settle the revoked job",
        || stack.log("c1").contains("REVOKED (revoked before it ran)"),
    );
    assert_eq!(job_row(&stack, &id)["state"], "REVOKED");
    assert!(!dir.path().join("ran").exists(), "the revoked command ran");
    stack.ok(&["server", "stop"]);
}

/// `app.control.revoke(id, terminate=True)` of a running command: the worker that runs it
/// signals its process group at once, the job ends REVOKED, and with events on a
/// `task-revoked` names the signal.
#[test]
fn app_control_revoke_with_terminate_ends_a_running_command() {
    let (stack, host, _queue, dir) = command_stack(
        r#"[tasks."t.sleep"]
command = ["/bin/sh", "-c", "echo $$ > {dir}/pid; exec sleep 30"]
"#,
        "send_events = true",
    );
    let node = format!("c1@{host}");
    let mut capture = Command::new(venv_bin("python"))
        .args(["-c", CAPTURE, &kombu_url(), &node, "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the event receiver");
    let stdout = capture.stdout.take().expect("its stdout");
    let capture = Killed(capture);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(20)).ok().as_deref(),
        Some("READY")
    );

    stack.ok(&["queue", "start", "c1"]);
    let id = stack.ok(&["call", "t.sleep"]).trim().to_string();
    let pid_file = dir.path().join("pid");
    eventually(Duration::from_secs(20), "the command to start", || {
        pid_file.exists() && job_row(&stack, &id)["state"] == "STARTED"
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the command's pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(pid));

    let asked = Instant::now();
    assert_eq!(
        python_revoke(&node, &id, true),
        serde_json::json!({"ok": format!("terminate: {id}")})
    );
    eventually(Duration::from_secs(10), "the job to end REVOKED", || {
        job_row(&stack, &id)["state"] == "REVOKED"
    });
    eventually(Duration::from_secs(5), "the command to be gone", || {
        !alive(pid)
    });
    let row = job_row(&stack, &id);
    assert!(
        row["error"].as_str().is_some_and(|e| e.contains("SIGTERM")),
        "{row}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "terminated by the answering worker, not after a long wait: {:?}",
        asked.elapsed()
    );

    stack.ok(&["queue", "stop", "c1"]);
    let mut events: Vec<Value> = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        events.push(serde_json::from_str(&line).expect("an event as JSON"));
    }
    drop(capture);
    let task: Vec<&Value> = events.iter().filter(|e| e["uuid"] == id.as_str()).collect();
    let kinds: Vec<&str> = task.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["task-received", "task-started", "task-revoked"]);
    let revoked = task[2];
    assert_eq!(revoked["terminated"], true, "{revoked}");
    assert_eq!(revoked["signum"], 15, "{revoked}");
    assert_eq!(revoked["expired"], false, "{revoked}");
    stack.ok(&["server", "stop"]);
}

/// A Python Celery worker and a cm worker on one broker, each with a queue of its own: a Celery
/// client gets both results; `app.control.ping` hears both; cm's pidbox replies and events do
/// not trouble the Celery worker (nothing in its log but its own task), nor its gossip cm's.
#[test]
fn a_celery_worker_and_a_cm_worker_share_the_broker_and_leave_each_other_alone() {
    let (stack, host, cm_queue, dir) = command_stack(
        "[tasks.\"t.echo\"]\ncommand = [\"/bin/sh\", \"-c\", \"echo '{{\\\"cm\\\": true}}' > $CM_RESULT\"]\n",
        "send_events = true",
    );
    stack.ok(&["queue", "start", "c1"]);
    let py_queue = unique("t_py");
    stack.delete_on_drop(&py_queue);
    let py_node = format!("py@{host}");
    std::fs::write(
        dir.path().join("mixed_app.py"),
        format!(
            "from celery import Celery\napp = Celery('mixed', broker={:?}, backend='rpc://')\n\
             @app.task(name='py.add')\ndef add(x, y):\n    return x + y\n",
            kombu_url()
        ),
    )
    .expect("write the Celery app");
    let log = dir.path().join("py.log");
    let worker = Killed(
        Command::new(venv_bin("celery"))
            .current_dir(dir.path())
            .env("PYTHONPATH", dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-A", "mixed_app", "worker", "-Q", &py_queue, "-n", &py_node])
            .args(["--pool", "solo", "-E", "-l", "info", "-f"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a Celery worker"),
    );
    const CLIENT: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from mixed_app import app
py_queue, cm_queue, nodes = sys.argv[2], sys.argv[3], sys.argv[4:]
import time
deadline = time.time() + 30
while time.time() < deadline:
    seen = {n for r in app.control.ping(timeout=1) for n in r}
    if all(n in seen for n in nodes):
        break
py = app.send_task("py.add", (2, 3), queue=py_queue).get(timeout=20)
cm = app.send_task("t.echo", queue=cm_queue).get(timeout=20)
print(json.dumps({"seen": sorted(seen), "py": py, "cm": cm}))
"#;
    let cm_node = format!("c1@{host}");
    let out = Command::new(venv_bin("python"))
        .args(["-c", CLIENT])
        .arg(dir.path())
        .args([&py_queue, &cm_queue, &py_node, &cm_node])
        .output()
        .expect("run the Celery client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Celery client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).expect("the client's JSON");
    assert_eq!(got["py"], 5, "{got}");
    assert_eq!(got["cm"]["cm"], true, "{got}");
    let seen = got["seen"].as_array().expect("nodes");
    for node in [&py_node, &cm_node] {
        assert!(
            seen.iter().any(|n| n == node.as_str()),
            "{node} not in {got}"
        );
    }
    let py_log = std::fs::read_to_string(&log).unwrap_or_default();
    for bad in [
        "Traceback",
        "ERROR",
        "unregistered",
        "Unrecoverable",
        "decode",
    ] {
        assert!(
            !py_log.contains(bad),
            "the Celery worker's log has {bad}:\n{py_log}"
        );
    }
    assert!(py_log.contains("py.add"), "{py_log}");
    let cm_log = stack.log("c1");
    for bad in ["poison", "ERROR", "panicked"] {
        assert!(!cm_log.contains(bad), "cm's log has {bad}:\n{cm_log}");
    }
    drop(worker);
    stack.ok(&["server", "stop"]);
}

/// `celery inspect scheduled` lists a countdown job the store holds SCHEDULED, with its eta;
/// `app.control.revoke` of it from Python ends it REVOKED, and it never runs.
#[test]
fn celery_inspect_scheduled_lists_a_countdown_job_and_a_python_revoke_ends_it() {
    let (stack, host, queue, dir) = command_stack(
        "[tasks.\"t.later\"]\ncommand = [\"/bin/sh\", \"-c\", \"touch {dir}/ran\"]\n",
        "",
    );
    stack.ok(&["queue", "start", "c1"]);
    const SEND: &str = r#"
import sys
from celery import Celery
app = Celery(broker=sys.argv[1])
print(app.send_task("t.later", queue=sys.argv[2], countdown=8).id)
"#;
    let out = Command::new(venv_bin("python"))
        .args(["-c", SEND, &kombu_url(), &queue])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eventually(Duration::from_secs(10), "the job to be SCHEDULED", || {
        job_row(&stack, &id)["state"] == "SCHEDULED"
    });
    let node = format!("c1@{host}");
    let listed = ask(&node, &["inspect", "scheduled"]);
    let entry = listed
        .as_array()
        .and_then(|l| l.iter().find(|e| e["request"]["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{id} not in {listed}"));
    assert_eq!(entry["request"]["name"], "t.later", "{entry}");
    assert!(
        entry["eta"]
            .as_str()
            .is_some_and(|eta| eta.ends_with("+00:00")),
        "{entry}"
    );
    let reply = python_revoke(&node, &id, false);
    assert!(
        reply["ok"].as_str().is_some_and(|t| t.contains(&id)),
        "{reply}"
    );
    assert_eq!(job_row(&stack, &id)["state"], "REVOKED");
    // Past its eta (8 s after sending), and a scheduler round on: still REVOKED, never ran.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(job_row(&stack, &id)["state"], "REVOKED");
    assert!(!dir.path().join("ran").exists(), "the revoked job ran");
    stack.ok(&["server", "stop"]);
}

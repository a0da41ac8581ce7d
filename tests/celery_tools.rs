//! Celery's own tools against real cm workers on the real broker: the `celery` CLI's inspect
//! and control commands, an `EventReceiver` capturing the events, and Flower's HTTP API. All
//! from bench/.venv (scripts/ensure-celery-venv.sh, which `make test` runs). Each test has its
//! own queues and its own node host, so its node names (`l1@<host>`) are nobody else's.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::celery::{kombu_url, python, spawn_python, venv_bin};
use common::*;
use serde_json::{json, Value};

/// A stack whose workers are `<name>@<a host of its own>`: (stack, host).
fn stack_of_its_own_host(options: Options) -> (Stack, String) {
    let host = unique("cthost").replace('_', "-");
    let stack = Stack::with(Options {
        node_host: Some(host.clone()),
        ..options
    });
    (stack, host)
}

/// [`stack_of_its_own_host`] with simulated steps of `seconds` each.
fn stack(seconds: f64) -> (Stack, String) {
    stack_of_its_own_host(Options {
        step_seconds: (seconds, seconds),
        ..Options::default()
    })
}

/// [`stack_of_its_own_host`] with a queue of command tasks too (worker `c1`), more `[worker]`
/// keys.
fn command_stack(tasks: &str, worker_keys: &str) -> (Stack, String) {
    stack_of_its_own_host(Options {
        worker_keys: worker_keys.into(),
        own_queue: Some(OwnQueue::commands(tasks)),
        ..Options::default()
    })
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
    mine(&replies, node)
        .unwrap_or_else(|| panic!("celery {all:?}: no reply from {node}:\n{stdout}"))
}

/// `node`'s reply among `replies` (`{node: reply}` or a list of them).
fn mine(replies: &Value, node: &str) -> Option<Value> {
    match replies {
        Value::Array(list) => list.iter().find_map(|r| r.get(node)),
        other => other.get(node),
    }
    .cloned()
}

/// `cm launch --quiet` of one job per host in `hosts`, waiting for them: the ids.
fn launch_waiting(stack: &Stack, hosts: &str) -> Vec<String> {
    stack.launch().hosts(hosts).quiet().wait().ids()
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

/// An event receiver of `node`'s events (Celery's `app.events.Receiver`), killed when dropped.
struct Events {
    _receiver: Killed,
    lines: Receiver<String>,
}

impl Events {
    /// Listens for at most `seconds`; returns once it consumes.
    fn listen(node: &str, seconds: u32) -> Self {
        let (receiver, lines) = spawn_python(CAPTURE, &[&kombu_url(), node, &seconds.to_string()]);
        assert_eq!(
            lines.recv_timeout(Duration::from_secs(20)).ok().as_deref(),
            Some("READY")
        );
        Self {
            _receiver: receiver,
            lines,
        }
    }

    /// The events up to the first that `last` takes (with it), which must come within 20 s.
    fn until(&self, mut last: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the event within 20 s");
            let event: Value = serde_json::from_str(&line).expect("an event as JSON");
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// The events left: until the worker went offline, or 20 s passed without one.
    fn rest(self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(20)) {
            events.push(serde_json::from_str(&line).expect("an event as JSON"));
        }
        events
    }
}

#[test]
fn celery_inspect_sees_a_cm_worker_ping_stats_registered_queues_conf() {
    let (stack, host) = stack(0.0);
    let node = format!("l1@{host}");
    stack.start(&["l1"]);
    let pid = stack.pid_of("l1");
    launch_waiting(&stack, "a[1-3]");

    assert_eq!(ask(&node, &["inspect", "ping"]), json!({"ok": "pong"}));

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
        json!(["cm.launch", "cm.provision"])
    );
    let queues = ask(&node, &["inspect", "active_queues"]);
    assert_eq!(queues[0]["name"], stack.launch.as_str(), "{queues}");
    assert_eq!(queues[0]["durable"], true);
    for empty in ["reserved", "scheduled", "revoked", "active"] {
        assert_eq!(ask(&node, &["inspect", empty]), json!([]), "{empty}");
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
    let restart = ask(&node, &["control", "pool_restart"]);
    assert!(
        restart["error"]
            .as_str()
            .is_some_and(|e| e.contains("pool_restart")),
        "{restart}"
    );
    // Revoke and terminate answer in Celery's words; the ids are kept (`inspect revoked`).
    assert_eq!(
        ask(&node, &["control", "revoke", "some-id"]),
        json!({"ok": "tasks {'some-id'} flagged as revoked"})
    );
    assert_eq!(
        ask(&node, &["control", "terminate", "SIGTERM", "other-id"]),
        json!({"ok": "terminate: tasks unknown"}),
        "nothing of that id runs here"
    );
    let bad = ask(&node, &["control", "terminate", "SIGSTOP", "third-id"]);
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("STOP")),
        "{bad}"
    );
    assert_eq!(
        ask(&node, &["inspect", "revoked"]),
        json!(["some-id", "other-id"])
    );
    // A message that is no request is dropped; the worker answers the next one.
    for garbage in [&b"not json"[..], b"[1, 2]", b"{\"method\": 7}"] {
        publish_via("celery.pidbox", "", garbage, Default::default());
    }
    assert_eq!(ask(&node, &["inspect", "ping"])["ok"], "pong");
    assert!(alive(pid), "the worker survived the garbage");
}

#[test]
fn celery_inspect_active_shows_the_running_job() {
    // Three 3 s steps: the job runs long enough for a `celery inspect`, a Python start each,
    // to catch it on a busy machine.
    let (stack, host) = stack(3.0);
    let node = format!("l1@{host}");
    stack.start(&["l1"]);
    let pid = stack.pid_of("l1");
    let id = stack.launch().hosts("slow1").quiet().id();

    let active = eventually_some(Duration::from_secs(15), "the job to show as active", || {
        let active = ask(&node, &["inspect", "active"]);
        active
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(active)
    });
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
    let now = now_s();
    let started = job["time_start"].as_f64().unwrap_or(0.0);
    assert!(
        now - started < 10.0 && now >= started - 1.0,
        "{started} vs {now}"
    );
    assert_eq!(ask(&node, &["inspect", "stats"])["total"]["cm.launch"], 1);

    eventually(Duration::from_secs(20), "the job to end", || {
        ask(&node, &["inspect", "active"]) == json!([])
    });
}

#[test]
fn celery_control_switches_events_and_shuts_the_worker_down_warmly() {
    let (stack, host) = stack(0.0);
    let node = format!("l1@{host}");
    stack.start(&["l1"]);
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

#[test]
fn an_event_receiver_sees_the_worker_and_its_tasks() {
    let (stack, host) = stack_of_its_own_host(Options {
        worker_keys: "send_events = true".into(),
        ..Options::default()
    });
    let node = format!("l1@{host}");
    let capture = Events::listen(&node, 40);

    stack.start(&["l1"]);
    let pid = stack.pid_of("l1");
    let with_events = launch_waiting(&stack, "e1");
    assert_eq!(
        ask(&node, &["control", "disable_events"])["ok"],
        "task events disabled"
    );
    let without = launch_waiting(&stack, "e2");
    // One heartbeat now, rather than waiting out the 2 s.
    ask(&node, &["control", "heartbeat"]);
    let mut events = capture.until(|e| e["type"] == "worker-heartbeat");
    stack.stop(&["l1"]);
    events.extend(capture.rest());

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

#[test]
fn flower_shows_the_cm_worker_online_and_a_job_it_ran() {
    let (stack, host) = stack(0.0);
    let node = format!("l1@{host}");
    stack.start(&["l1"]);
    let pid = stack.pid_of("l1");

    let port = closed_port();
    let _flower = Killed::spawn(
        Command::new(venv_bin("celery"))
            .arg(format!("--broker={}", kombu_url()))
            .args(["flower", "--address=127.0.0.1", &format!("--port={port}")])
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .current_dir(stack.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let http = common::web::client();
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
    let worker = eventually_some(
        Duration::from_secs(30),
        "Flower to have the worker's stats",
        || {
            let worker = get("/api/workers?refresh=1")?[&node].clone();
            worker["stats"].is_object().then_some(worker)
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
    let id = launch_waiting(&stack, "f1").remove(0);
    let task = eventually_some(
        Duration::from_secs(15),
        "Flower to see the job succeed",
        || {
            let task = get("/api/tasks")?[&id].clone();
            (task["state"] == "SUCCESS").then_some(task)
        },
    );
    assert_eq!(task["name"], "cm.launch", "{task}");
    assert_eq!(task["worker"], node.as_str(), "{task}");
    assert!(task["runtime"].is_f64(), "{task}");
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
    let out = python(REVOKE, &[&kombu_url(), node, id, how]);
    let replies: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("no JSON from app.control.revoke ({e}):\n{out}"));
    mine(&replies, node).unwrap_or_else(|| panic!("no reply from {node}: {out}"))
}

/// A Celery client's revoke reaches the workers that are not running through the store: the
/// launcher's worker answers it, and the job queued for a worker not yet started never runs.
#[test]
fn app_control_revoke_of_a_job_whose_workers_are_down_keeps_it_from_ever_running() {
    let (stack, host) = command_stack(
        r#"[tasks."t.mark"]
command = ["/bin/sh", "-c", "touch {dir}/ran"]
"#,
        "",
    );
    // Declared by cm, then no worker for it.
    stack.start(&["c1"]);
    stack.stop(&["c1"]);
    let id = stack.call("t.mark").id();
    // Only the launcher's worker runs: it is the one Celery's broadcast reaches.
    stack.start(&["l1"]);
    let node = format!("l1@{host}");
    assert_eq!(
        python_revoke(&node, &id, false),
        json!({"ok": format!("tasks {{'{id}'}} flagged as revoked")})
    );
    let row = stack.job(&id);
    assert_eq!(row["state"], "REVOKED", "queued: revoked at once: {row}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains(&node) && e.contains("remote control")),
        "{row}"
    );
    assert_eq!(ask(&node, &["inspect", "revoked"]), json!([id.as_str()]));

    stack.start(&["c1"]);
    eventually(
        Duration::from_secs(20),
        "the worker to settle the revoked job",
        || stack.log("c1").contains("REVOKED (revoked before it ran)"),
    );
    assert_eq!(stack.job(&id)["state"], "REVOKED");
    assert!(!stack.file("ran").exists(), "the revoked command ran");
    stack.server_stop();
}

/// `app.control.revoke(id, terminate=True)` of a running command: the worker that runs it
/// signals its process group at once, the job ends REVOKED, and with events on a
/// `task-revoked` names the signal.
#[test]
fn app_control_revoke_with_terminate_ends_a_running_command() {
    let (stack, host) = command_stack(
        r#"[tasks."t.sleep"]
command = ["/bin/sh", "-c", "echo $$ > {dir}/pid; exec sleep 30"]
"#,
        "send_events = true",
    );
    let node = format!("c1@{host}");
    let capture = Events::listen(&node, 60);

    stack.start(&["c1"]);
    let id = stack.call("t.sleep").id();
    let pid_file = stack.file("pid");
    eventually(Duration::from_secs(20), "the command to start", || {
        pid_file.exists() && stack.job(&id)["state"] == "STARTED"
    });
    let pid = read_pid(&pid_file);
    assert!(alive(pid));

    let asked = Instant::now();
    assert_eq!(
        python_revoke(&node, &id, true),
        json!({"ok": format!("terminate: {id}")})
    );
    eventually(Duration::from_secs(10), "the job to end REVOKED", || {
        stack.job(&id)["state"] == "REVOKED"
    });
    eventually(Duration::from_secs(5), "the command to be gone", || {
        !alive(pid)
    });
    let row = stack.job(&id);
    assert!(
        row["error"].as_str().is_some_and(|e| e.contains("SIGTERM")),
        "{row}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "terminated by the answering worker, not after a long wait: {:?}",
        asked.elapsed()
    );

    stack.stop(&["c1"]);
    let events = capture.rest();
    let task: Vec<&Value> = events.iter().filter(|e| e["uuid"] == id.as_str()).collect();
    let kinds: Vec<&str> = task.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["task-received", "task-started", "task-revoked"]);
    let revoked = task[2];
    assert_eq!(revoked["terminated"], true, "{revoked}");
    assert_eq!(revoked["signum"], 15, "{revoked}");
    assert_eq!(revoked["expired"], false, "{revoked}");
    stack.server_stop();
}

/// A Python Celery worker and a cm worker on one broker, each with a queue of its own: a Celery
/// client gets both results; `app.control.ping` hears both; cm's pidbox replies and events do
/// not trouble the Celery worker (nothing in its log but its own task), nor its gossip cm's.
#[test]
fn a_celery_worker_and_a_cm_worker_share_the_broker_and_leave_each_other_alone() {
    let (stack, host) = command_stack(
        "[tasks.\"t.echo\"]\ncommand = [\"/bin/sh\", \"-c\", \"echo '{{\\\"cm\\\": true}}' > $CM_RESULT\"]\n",
        "send_events = true",
    );
    stack.start(&["c1"]);
    let py_queue = unique("t_py");
    stack.delete_on_drop(&py_queue);
    let py_node = format!("py@{host}");
    let app_dir = stack.files();
    std::fs::write(
        stack.file("mixed_app.py"),
        format!(
            "from celery import Celery\napp = Celery('mixed', broker={:?}, backend='rpc://')\n\
             @app.task(name='py.add')\ndef add(x, y):\n    return x + y\n",
            kombu_url()
        ),
    )
    .expect("write the Celery app");
    let log = stack.file("py.log");
    let worker = Killed::spawn(
        Command::new(venv_bin("celery"))
            .current_dir(&app_dir)
            .env("PYTHONPATH", &app_dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-A", "mixed_app", "worker", "-Q", &py_queue, "-n", &py_node])
            .args(["--pool", "solo", "-E", "-l", "info", "-f"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
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
    let out = python(
        CLIENT,
        &[
            &app_dir.to_string_lossy(),
            &py_queue,
            stack.queue(),
            &py_node,
            &cm_node,
        ],
    );
    let got: Value = serde_json::from_str(out.trim()).expect("the client's JSON");
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
    stack.server_stop();
}

/// `celery inspect scheduled` lists a countdown job the store holds SCHEDULED, with its eta;
/// `app.control.revoke` of it from Python ends it REVOKED, and it never runs.
#[test]
fn celery_inspect_scheduled_lists_a_countdown_job_and_a_python_revoke_ends_it() {
    let (stack, host) = command_stack(
        "[tasks.\"t.later\"]\ncommand = [\"/bin/sh\", \"-c\", \"touch {dir}/ran\"]\n",
        "",
    );
    stack.start(&["c1"]);
    let out = python(
        &common::celery::client(
            "import sys\nprint(app.send_task(\"t.later\", queue=sys.argv[1], countdown=8).id)\n",
        ),
        &[stack.queue()],
    );
    let id = out.trim().to_string();
    eventually(Duration::from_secs(10), "the job to be SCHEDULED", || {
        stack.job(&id)["state"] == "SCHEDULED"
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
    assert_eq!(stack.job(&id)["state"], "REVOKED");
    // Past its eta (8 s after sending), and a scheduler round on: still REVOKED, never ran.
    std::thread::sleep(Duration::from_secs(9));
    assert_eq!(stack.job(&id)["state"], "REVOKED");
    assert!(!stack.file("ran").exists(), "the revoked job ran");
    stack.server_stop();
}

//! What each remote-control method answers, in the shapes `celery/worker/control.py` gives
//! them and Flower reads (`flower/inspector.py`, `templates/worker.html`): the worker fills in
//! the values, these types fix the keys.

use serde::Serialize;
use serde_json::{json, Map, Value};

/// The methods a cm worker knows, by Celery's names and their old `dump_*` aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ping,
    Stats,
    Active,
    Reserved,
    Scheduled,
    Registered,
    ActiveQueues,
    Revoked,
    Conf,
    Clock,
    Hello,
    Shutdown,
    EnableEvents,
    DisableEvents,
    Heartbeat,
    Revoke,
    Terminate,
    /// Flow control, kept in the store as `cm queue pause|resume|scale` keep it.
    AddConsumer,
    CancelConsumer,
    PoolGrow,
    PoolShrink,
    Autoscale,
    /// A task's rate, kept in the store for every worker (`cm tasks rate`).
    RateLimit,
}

impl Method {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ping" => Self::Ping,
            "stats" => Self::Stats,
            "active" | "dump_active" => Self::Active,
            "reserved" | "dump_reserved" => Self::Reserved,
            "scheduled" | "dump_schedule" => Self::Scheduled,
            "registered" | "dump_tasks" => Self::Registered,
            "active_queues" => Self::ActiveQueues,
            "revoked" | "dump_revoked" => Self::Revoked,
            "conf" | "dump_conf" => Self::Conf,
            "clock" => Self::Clock,
            "hello" => Self::Hello,
            "shutdown" => Self::Shutdown,
            "enable_events" => Self::EnableEvents,
            "disable_events" => Self::DisableEvents,
            "heartbeat" => Self::Heartbeat,
            "revoke" => Self::Revoke,
            "terminate" => Self::Terminate,
            "add_consumer" => Self::AddConsumer,
            "cancel_consumer" => Self::CancelConsumer,
            "pool_grow" => Self::PoolGrow,
            "pool_shrink" => Self::PoolShrink,
            "autoscale" => Self::Autoscale,
            "rate_limit" => Self::RateLimit,
            _ => return None,
        })
    }
}

/// Every name [`Method::from_name`] takes, for the error an unknown method gets.
pub const KNOWN: &str = "ping, stats, active, reserved, scheduled, registered, active_queues, \
revoked, conf, clock, hello, shutdown, enable_events, disable_events, heartbeat, revoke, terminate, \
add_consumer, cancel_consumer, pool_grow, pool_shrink, autoscale, rate_limit";

/// `{"ok": text}`, Celery's `ok()`.
pub fn ok(text: &str) -> Value {
    json!({ "ok": text })
}

/// `{"error": text}`, Celery's `nok()`.
pub fn error(text: &str) -> Value {
    json!({ "error": text })
}

/// `revoke` without terminate, in Celery's words: the ids as the Python set it formats them
/// (`tasks {'a', 'b'} flagged as revoked`).
pub fn flagged_as_revoked(ids: &[String]) -> Value {
    let set = if ids.is_empty() {
        "set()".to_string()
    } else {
        let quoted: Vec<String> = ids
            .iter()
            .map(|id| crate::celery::pyrepr::py_repr(id))
            .collect();
        format!("{{{}}}", quoted.join(", "))
    };
    ok(&format!("tasks {set} flagged as revoked"))
}

/// `revoke` with terminate, and `terminate`: the ids this worker runs and so terminates, or
/// Celery's `tasks unknown` when it runs none of them (the revoke is kept all the same).
pub fn terminating(here: &[String]) -> Value {
    if here.is_empty() {
        ok("terminate: tasks unknown")
    } else {
        ok(&format!("terminate: {}", here.join(", ")))
    }
}

/// What an unknown method gets (Celery answers `{"error": "KeyError('name')"}`).
pub fn unknown_method(name: &str) -> Value {
    error(&format!(
        "no such control command: {name:?} (a cm worker answers {KNOWN})"
    ))
}

/// Where a running job's message came from, as `delivery_info`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryInfo {
    pub exchange: String,
    pub routing_key: String,
    pub priority: u8,
    pub redelivered: bool,
}

/// One running job, as `Request.info()` describes it (`inspect active`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub name: String,
    /// The args list, or with `safe` its repr text.
    pub args: Value,
    pub kwargs: Value,
    /// The task's type: Celery gives its name here too.
    #[serde(rename = "type")]
    pub kind: String,
    pub hostname: String,
    /// Epoch seconds.
    pub time_start: f64,
    pub acknowledged: bool,
    pub delivery_info: DeliveryInfo,
    pub worker_pid: u32,
}

/// A work queue as `kombu.Queue.as_dict(recurse=True)` (`inspect active_queues`): cm's queues
/// are on the default exchange with the queue's name as routing key.
pub fn queue_info(name: &str, quorum: bool) -> Value {
    let arguments = if quorum {
        json!({"x-queue-type": "quorum"})
    } else {
        Value::Null
    };
    json!({
        "name": name,
        "exchange": {
            "name": "", "type": "direct", "arguments": null, "durable": true,
            "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false,
        },
        "routing_key": name,
        "queue_arguments": arguments,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": true,
        "exclusive": false,
        "auto_delete": false,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": null,
    })
}

/// The broker part of `stats`, as kombu's `Connection.info()` without the password: Flower's
/// inspector pops keys from it, so it must be a dict. `url` is the worker's first broker URL.
pub fn broker_info(url: &str, heartbeat: u16, connect_timeout: u64) -> Value {
    let first = url.split(';').next().unwrap_or(url);
    let parsed = url::Url::parse(first).ok();
    let vhost = parsed
        .as_ref()
        .map(|u| percent_decode(u.path().trim_start_matches('/')))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let ssl = parsed.as_ref().is_some_and(|u| u.scheme() == "amqps");
    json!({
        "hostname": parsed.as_ref().and_then(|u| u.host_str().map(str::to_string)),
        "userid": parsed.as_ref().map(|u| u.username().to_string()).filter(|u| !u.is_empty()).unwrap_or_else(|| "guest".into()),
        "virtual_host": vhost,
        "port": parsed.as_ref().and_then(|u| u.port()).unwrap_or(if ssl { 5671 } else { 5672 }),
        "insist": false,
        "ssl": ssl,
        "transport": "amqp",
        "connect_timeout": connect_timeout,
        "transport_options": {},
        "login_method": "PLAIN",
        "uri_prefix": null,
        "heartbeat": heartbeat,
    })
}

/// `%2f` → `/`: a vhost as the broker knows it. A `%` not followed by two hex digits stays.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `getrusage(RUSAGE_SELF)`, the fields Celery reports (times in seconds, maxrss in KiB).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rusage {
    pub utime: f64,
    pub stime: f64,
    pub maxrss: i64,
    pub minflt: i64,
    pub majflt: i64,
    pub inblock: i64,
    pub oublock: i64,
    pub nvcsw: i64,
    pub nivcsw: i64,
}

/// What `stats` is made of; [`Stats::to_value`] gives Celery's shape.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Jobs started per task name since the worker started.
    pub total: Map<String, Value>,
    pub pid: u32,
    pub clock: u64,
    pub uptime_seconds: u64,
    pub concurrency: u16,
    pub prefetch_count: u16,
    pub broker: Value,
    pub rusage: Option<Rusage>,
    /// cm's own counters, shown by Flower among the "other" stats.
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub events_dropped: u64,
}

impl Stats {
    pub fn to_value(&self) -> Value {
        json!({
            "total": self.total,
            "pid": self.pid,
            // A string in Celery's stats (`str(app.clock)`), an integer in its events.
            "clock": self.clock.to_string(),
            "uptime": self.uptime_seconds,
            "pool": {
                "implementation": "cm (tokio tasks in one process)",
                "max-concurrency": self.concurrency,
                "processes": [self.pid],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
            },
            "broker": self.broker,
            "prefetch_count": self.prefetch_count,
            "rusage": self.rusage.as_ref().map_or(Value::String("N/A".into()), |r| json!(r)),
            "cm_jobs_done": self.jobs_done,
            "cm_jobs_failed": self.jobs_failed,
            "cm_events_dropped": self.events_dropped,
        })
    }
}

/// `registered`: task names, sorted, as Celery lists them (without attributes).
pub fn registered(tasks: &[&str]) -> Value {
    let mut names: Vec<&str> = tasks.to_vec();
    names.sort_unstable();
    names.dedup();
    json!(names)
}

/// `hello` (mingle's sync): a node answers others, not itself. cm's workers share revokes
/// through the status store, not by mingling, so the set it gives is empty.
pub fn hello(me: &str, from_node: Option<&str>, clock: u64) -> Value {
    match from_node {
        Some(from) if from == me => Value::Null,
        _ => json!({"revoked": {}, "clock": clock}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_replies_are_celerys_words() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            flagged_as_revoked(&ids(&["a1"])),
            json!({"ok": "tasks {'a1'} flagged as revoked"})
        );
        assert_eq!(
            flagged_as_revoked(&ids(&["a", "b"]))["ok"],
            "tasks {'a', 'b'} flagged as revoked"
        );
        assert_eq!(
            flagged_as_revoked(&[])["ok"],
            "tasks set() flagged as revoked"
        );
        assert_eq!(terminating(&[])["ok"], "terminate: tasks unknown");
        assert_eq!(terminating(&ids(&["a", "b"]))["ok"], "terminate: a, b");
    }

    #[test]
    fn every_known_name_parses_and_aliases_map_to_their_method() {
        for name in KNOWN.split(", ") {
            assert!(Method::from_name(name).is_some(), "{name}");
        }
        assert_eq!(Method::from_name("dump_tasks"), Some(Method::Registered));
        assert_eq!(Method::from_name("dump_conf"), Some(Method::Conf));
        assert_eq!(Method::from_name("pool_grow"), Some(Method::PoolGrow));
        assert_eq!(Method::from_name("pool_restart"), None);
        let e = unknown_method("pool_restart");
        assert!(
            e["error"]
                .as_str()
                .is_some_and(|t| t.contains("pool_restart") && t.contains("autoscale")),
            "{e}"
        );
    }

    #[test]
    fn broker_info_is_kombus_shape_without_the_password() {
        let b = broker_info(
            "amqp://cm:s3cret@mq1:5673/prod%2Fa?heartbeat=5;amqp://mq2",
            10,
            10,
        );
        assert_eq!(b["hostname"], "mq1");
        assert_eq!(b["userid"], "cm");
        assert_eq!(b["port"], 5673);
        assert_eq!(b["virtual_host"], "prod/a");
        assert_eq!(b["transport"], "amqp");
        assert!(!b.to_string().contains("s3cret"), "{b}");
        let d = broker_info("amqp://guest:guest@127.0.0.1:5672/%2f", 10, 10);
        assert_eq!(d["virtual_host"], "/");
        assert_eq!(broker_info("amqps://h", 10, 10)["port"], 5671);
    }

    #[test]
    fn stats_has_what_celery_and_flower_read() {
        let mut total = Map::new();
        total.insert("cm.launch".into(), json!(3));
        let s = Stats {
            total,
            pid: 42,
            clock: 7,
            uptime_seconds: 5,
            concurrency: 2,
            prefetch_count: 8,
            broker: broker_info("amqp://h", 10, 10),
            rusage: Some(Rusage::default()),
            jobs_done: 3,
            jobs_failed: 0,
            events_dropped: 0,
        }
        .to_value();
        assert_eq!(s["total"]["cm.launch"], 3);
        assert!(s["broker"].is_object(), "Flower pops keys from it");
        assert_eq!(s["clock"], "7");
        assert_eq!(s["pool"]["max-concurrency"], 2);
        assert_eq!(s["pool"]["processes"], json!([42]));
        assert_eq!(s["prefetch_count"], 8);
        assert!(s["rusage"].is_object());
    }

    #[test]
    fn queues_tasks_and_hello() {
        let q = queue_info("launcher", true);
        assert_eq!(q["name"], "launcher");
        assert_eq!(q["routing_key"], "launcher");
        assert_eq!(q["queue_arguments"]["x-queue-type"], "quorum");
        assert_eq!(queue_info("p", false)["queue_arguments"], Value::Null);
        assert_eq!(
            registered(&["cm.provision", "cm.launch"]),
            json!(["cm.launch", "cm.provision"])
        );
        assert_eq!(hello("p1@h", Some("p1@h"), 3), Value::Null);
        assert_eq!(
            hello("p1@h", Some("p2@h"), 3),
            json!({"revoked": {}, "clock": 3})
        );
    }
}

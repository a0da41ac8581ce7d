//! Celery's events (`celery/events/dispatcher.py`, `celery/worker/heartbeat.py`): JSON objects
//! on the topic exchange `celeryev`, routed by their type with `-` turned to `.`, transient,
//! with a `hostname` header. Worker events (online, heartbeat, offline) always go; task events
//! only when enabled. What Flower and `celery events` read from them is the shape here.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::Serialize;

/// Topic, durable, not auto-deleted (`event_exchange`).
pub const EXCHANGE: &str = "celeryev";
/// Several task events in one message, a JSON list: what a Celery worker with an event loop
/// sends (`buffer_group=['task']`), and what `EventReceiver` unpacks.
pub const MULTI_ROUTING_KEY: &str = "task.multi";
/// How often a worker says it is alive; Flower counts it offline after two missed.
pub const HEARTBEAT_SECONDS: f64 = 2.0;

/// `worker-heartbeat` → `worker.heartbeat`.
pub fn routing_key(kind: &str) -> String {
    kind.replace('-', ".")
}

/// Who sends: the fields every event carries besides its type, time and clock.
#[derive(Debug, Clone)]
pub struct Origin {
    pub hostname: String,
    pub pid: u32,
    /// Hours west of UTC, as Python's `time.timezone // 3600`: [`python_utcoffset`].
    pub utcoffset: i64,
}

/// Python's sign and rounding for a zone `gmtoff_seconds` east of UTC: `-gmtoff // 3600`.
/// The receiver shifts a timestamp by the difference of its own offset and this one, so a
/// worker must send the offset a Python worker in its zone would.
pub fn python_utcoffset(gmtoff_seconds: i64) -> i64 {
    (-gmtoff_seconds).div_euclid(3600)
}

/// Writes a worker's events. What every event of the worker carries besides its type, time and
/// clock (hostname, utcoffset, pid) is encoded once, when the worker starts; each event adds
/// only its own fields.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// `,"hostname":"...","utcoffset":N,"pid":N,"timestamp":`
    after_type: Vec<u8>,
}

impl Encoder {
    pub fn new(origin: &Origin) -> Self {
        let mut after_type = b",\"hostname\":".to_vec();
        json_into(&mut after_type, &origin.hostname);
        after_type.extend_from_slice(b",\"utcoffset\":");
        json_into(&mut after_type, &origin.utcoffset);
        after_type.extend_from_slice(b",\"pid\":");
        json_into(&mut after_type, &origin.pid);
        after_type.extend_from_slice(b",\"timestamp\":");
        Self { after_type }
    }

    /// Appends one event's JSON object to `out`: `{"type":kind, origin..., fields...}`, where
    /// `fields` serialises as a JSON object (a struct, or a struct-like enum variant).
    pub fn write<F: Serialize>(
        &self,
        out: &mut Vec<u8>,
        kind: &str,
        timestamp: f64,
        clock: u64,
        fields: &F,
    ) {
        out.extend_from_slice(b"{\"type\":");
        json_into(out, kind);
        out.extend_from_slice(&self.after_type);
        json_into(out, &timestamp);
        out.extend_from_slice(b",\"clock\":");
        json_into(out, &clock);
        let at = out.len();
        json_into(out, fields);
        // The fields' own object joins the envelope: its `{` becomes the comma after `clock`.
        match &out[at..] {
            b"{}" => {
                out.truncate(at);
                out.push(b'}');
            }
            [b'{', ..] => out[at] = b',',
            // Not an object: under a key of its own rather than bad JSON.
            _ => {
                let value = out.split_off(at);
                out.extend_from_slice(b",\"fields\":");
                out.extend_from_slice(&value);
                out.push(b'}');
            }
        }
    }
}

/// Appends `value`'s JSON. Strings, numbers and structs of them: serialising cannot fail.
fn json_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// One event's JSON body.
pub fn encode<F: Serialize>(
    kind: &str,
    origin: &Origin,
    timestamp: f64,
    clock: u64,
    fields: &F,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    Encoder::new(origin).write(&mut out, kind, timestamp, clock, fields);
    out
}

/// An event's properties: JSON, transient, header `hostname`.
pub fn properties(hostname: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("hostname"),
        AMQPValue::LongString(LongString::from(hostname.as_bytes())),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_headers(headers)
}

/// The fields of `worker-online`, `worker-heartbeat` and `worker-offline`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerFields<'a> {
    pub freq: f64,
    /// Jobs running now.
    pub active: usize,
    /// Jobs started since the worker started.
    pub processed: u64,
    pub loadavg: [f64; 3],
    pub sw_ident: &'a str,
    pub sw_ver: &'a str,
    pub sw_sys: &'a str,
}

pub const WORKER_ONLINE: &str = "worker-online";
pub const WORKER_HEARTBEAT: &str = "worker-heartbeat";
pub const WORKER_OFFLINE: &str = "worker-offline";

/// The task events a cm worker sends, with Celery's fields (`strategy.py`, `request.py`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TaskEvent<'a> {
    Received {
        uuid: &'a str,
        name: &'a str,
        /// Repr texts (`argsrepr`, `kwargsrepr`), not the values.
        args: &'a str,
        kwargs: &'a str,
        root_id: Option<&'a str>,
        parent_id: Option<&'a str>,
        retries: u32,
        eta: Option<&'a str>,
        expires: Option<&'a str>,
    },
    Started {
        uuid: &'a str,
    },
    Succeeded {
        uuid: &'a str,
        /// The result as text (Celery sends its repr).
        result: &'a str,
        /// Seconds the job ran.
        runtime: f64,
    },
    Failed {
        uuid: &'a str,
        exception: &'a str,
        traceback: &'a str,
    },
    Retried {
        uuid: &'a str,
        exception: &'a str,
        traceback: &'a str,
    },
    /// A job ended REVOKED: revoked before it ran, terminated, or expired.
    Revoked {
        uuid: &'a str,
        terminated: bool,
        signum: Option<i32>,
        expired: bool,
    },
}

impl TaskEvent<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Received { .. } => "task-received",
            Self::Started { .. } => "task-started",
            Self::Succeeded { .. } => "task-succeeded",
            Self::Failed { .. } => "task-failed",
            Self::Retried { .. } => "task-retried",
            Self::Revoked { .. } => "task-revoked",
        }
    }

    /// Its routing key when sent alone (`task.received`, ...).
    pub fn routing_key(&self) -> &'static str {
        match self {
            Self::Received { .. } => "task.received",
            Self::Started { .. } => "task.started",
            Self::Succeeded { .. } => "task.succeeded",
            Self::Failed { .. } => "task.failed",
            Self::Retried { .. } => "task.retried",
            Self::Revoked { .. } => "task.revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn origin() -> Origin {
        Origin {
            hostname: "l1@h".into(),
            pid: 99,
            utcoffset: 0,
        }
    }

    fn parsed(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    }

    #[test]
    fn a_heartbeat_has_every_field_flower_reads() {
        let fields = WorkerFields {
            freq: HEARTBEAT_SECONDS,
            active: 1,
            processed: 5,
            loadavg: [0.5, 0.25, 0.0],
            sw_ident: "cm",
            sw_ver: "0.1.0",
            sw_sys: "Linux",
        };
        let e = parsed(&encode(WORKER_HEARTBEAT, &origin(), 1.5e9, 7, &fields));
        assert_eq!(
            e,
            json!({
                "type": "worker-heartbeat", "hostname": "l1@h", "timestamp": 1.5e9,
                "utcoffset": 0, "pid": 99, "clock": 7, "freq": 2.0, "active": 1,
                "processed": 5, "loadavg": [0.5, 0.25, 0.0], "sw_ident": "cm",
                "sw_ver": "0.1.0", "sw_sys": "Linux"
            })
        );
        assert!(e["clock"].is_u64(), "an integer, never null or text");
        assert_eq!(routing_key(WORKER_HEARTBEAT), "worker.heartbeat");
    }

    #[test]
    fn task_events_carry_celerys_fields() {
        let received = TaskEvent::Received {
            uuid: "id-1",
            name: "cm.launch",
            args: "[]",
            kwargs: "{'server': 'x'}",
            root_id: Some("id-1"),
            parent_id: None,
            retries: 0,
            eta: None,
            expires: None,
        };
        assert_eq!(received.kind(), "task-received");
        assert_eq!(received.routing_key(), routing_key(received.kind()));
        let e = parsed(&encode(received.kind(), &origin(), 1.0, 2, &received));
        assert_eq!(e["type"], "task-received");
        assert_eq!(e["uuid"], "id-1");
        assert_eq!(e["kwargs"], "{'server': 'x'}");
        assert_eq!(e["parent_id"], Value::Null);
        assert_eq!(e["eta"], Value::Null);
        let done = TaskEvent::Succeeded {
            uuid: "id-1",
            result: "{\"state\": \"active\"}",
            runtime: 0.25,
        };
        let e = parsed(&encode(done.kind(), &origin(), 1.0, 3, &done));
        assert!(e["result"].is_string(), "the result goes as text");
        assert_eq!(e["runtime"], 0.25);
        for event in [
            TaskEvent::Started { uuid: "i" },
            TaskEvent::Failed {
                uuid: "i",
                exception: "e",
                traceback: "",
            },
            TaskEvent::Retried {
                uuid: "i",
                exception: "e",
                traceback: "",
            },
            TaskEvent::Revoked {
                uuid: "i",
                terminated: false,
                signum: None,
                expired: false,
            },
        ] {
            assert_eq!(event.routing_key(), routing_key(event.kind()));
        }
    }

    #[test]
    fn fields_that_are_no_object_still_make_one_json_object() {
        #[derive(Serialize)]
        struct Nothing {}
        let e = parsed(&encode("x", &origin(), 1.0, 1, &Nothing {}));
        assert_eq!(e["type"], "x");
        assert_eq!(e["clock"], 1);
        let e = parsed(&encode("x", &origin(), 1.0, 1, &[1, 2]));
        assert_eq!(e["fields"], json!([1, 2]));
        assert_eq!(e["pid"], 99);
    }

    #[test]
    fn a_hostname_that_needs_escaping_is_escaped_once() {
        let mut o = origin();
        o.hostname = "a\"b@h".into();
        let e = parsed(&encode("x", &o, 1.0, 1, &TaskEvent::Started { uuid: "u" }));
        assert_eq!(e["hostname"], "a\"b@h");
        assert_eq!(e["uuid"], "u");
    }

    #[test]
    fn utcoffset_as_python_computes_it() {
        assert_eq!(python_utcoffset(0), 0);
        assert_eq!(python_utcoffset(3600), -1, "UTC+1: time.timezone is -3600");
        assert_eq!(python_utcoffset(-5 * 3600), 5, "UTC-5");
        assert_eq!(python_utcoffset(19_800), -6, "UTC+5:30 floors, as // does");
    }

    #[test]
    fn properties_are_transient_json_with_the_hostname() {
        let p = properties("l1@h");
        assert_eq!(p.delivery_mode(), &Some(1));
        let headers = p.headers().clone().unwrap_or_default();
        assert_eq!(
            headers.inner().get("hostname"),
            Some(&AMQPValue::LongString("l1@h".into()))
        );
    }
}

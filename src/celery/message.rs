//! Celery message protocol v2 over AMQP, JSON body: encode for publishers, decode for workers.
//!
//! Headers carry the task name and id; the body is `[args, kwargs, embed]`.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{Map, Value};
use std::time::Duration;

use crate::celery::timestamp;

/// The body's third part: no callbacks, errbacks, chain or chord (keys in serde_json's order).
const EMBED: &str = r#"{"callbacks":null,"chain":null,"chord":null,"errbacks":null}"#;

/// A task message as a worker sees it.
#[derive(Debug, Clone)]
pub struct TaskMessage {
    pub id: String,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub retries: u32,
    /// Where a Celery client with the rpc:// backend waits for the result.
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// Not before this (ms since the epoch): the `eta` header, which is also how a Celery
    /// client sends a `countdown`.
    pub eta_ms: Option<i64>,
    /// Not after this (ms since the epoch): the `expires` header. Received later, the job is
    /// REVOKED unrun, as a Celery worker does.
    pub expires_ms: Option<i64>,
    /// The `timelimit` header.
    pub time_limit: TimeLimit,
}

/// A message's `timelimit` header: `[hard, soft]` in seconds, each may be null. Celery's order
/// is hard first (`[time_limit, soft_time_limit]`, celery/app/amqp.py).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    pub hard: Option<Duration>,
    pub soft: Option<Duration>,
}

impl TimeLimit {
    /// The limit cm enforces: the hard one; the soft one where there is no hard one. cm has no
    /// soft limit of its own (a command cannot catch Celery's SoftTimeLimitExceeded), so a soft
    /// limit alone ends the job as a hard one would, and a soft limit under a hard one is not
    /// enforced.
    pub fn enforced(&self) -> Option<Duration> {
        self.hard.or(self.soft)
    }
}

/// Why a message cannot be a task; the reason goes with it to the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: cm reads JSON (set task_serializer='json' on Celery clients)")]
    ContentType(String),
    #[error("missing header {0:?}: not a Celery protocol v2 message")]
    MissingHeader(&'static str),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has the wrong shape: {0}")]
    WrongShape(&'static str),
    #[error("header {header:?} is {got}: it must be a whole number from {min} to {max}")]
    OutOfRange {
        header: &'static str,
        got: String,
        min: i64,
        max: i64,
    },
    #[error("header {header:?}: {why}")]
    BadTime {
        header: &'static str,
        why: timestamp::BadTimestamp,
    },
    #[error(
        "header \"timelimit\" is {got}: it must be [hard, soft], each a number of seconds or null"
    )]
    BadTimeLimit { got: String },
}

impl TaskMessage {
    /// A new message for `task` with a fresh UUID, as Celery's task ids are. Version 7 (time
    /// first, then random) rather than Celery's random version 4: the store's indexes on the id
    /// then grow at one end instead of touching a random page per job.
    pub fn new(task: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            task: task.to_string(),
            args,
            kwargs,
            retries: 0,
            reply_to: None,
            correlation_id: None,
            eta_ms: None,
            expires_ms: None,
            time_limit: TimeLimit::default(),
        }
    }

    /// The body and the AMQP properties, exactly as a Celery 5 client would send them.
    pub fn encode(&self, origin: &str) -> (Vec<u8>, BasicProperties) {
        // args and kwargs are serialised once each for the body, not as a `json!` body built
        // from clones: this is `cm launch`'s hot loop. A Value always serialises. Their reprs
        // are Python's, as Celery's clients send them: what Flower shows, and a text events
        // carry without escaping.
        let args = serde_json::to_string(&self.args).unwrap_or_else(|_| "[]".into());
        let kwargs = serde_json::to_string(&self.kwargs).unwrap_or_else(|_| "{}".into());
        let args_repr = crate::celery::pyrepr::py_repr_list(&self.args);
        let kwargs_repr = crate::celery::pyrepr::py_repr_map(&self.kwargs);
        let mut body = Vec::with_capacity(args.len() + kwargs.len() + EMBED.len() + 4);
        for part in [
            b"[".as_slice(),
            args.as_bytes(),
            b",",
            kwargs.as_bytes(),
            b",",
            EMBED.as_bytes(),
            b"]",
        ] {
            body.extend_from_slice(part);
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes()));
        let mut headers = FieldTable::default();
        for (key, value) in [
            ("lang", text("py")),
            ("task", text(&self.task)),
            ("id", text(&self.id)),
            ("root_id", text(&self.id)),
            ("parent_id", AMQPValue::Void),
            ("group", AMQPValue::Void),
            ("shadow", AMQPValue::Void),
            ("retries", AMQPValue::LongLongInt(i64::from(self.retries))),
            (
                "eta",
                self.eta_ms
                    .map_or(AMQPValue::Void, |ms| text(&timestamp::format_ms(ms))),
            ),
            (
                "expires",
                self.expires_ms
                    .map_or(AMQPValue::Void, |ms| text(&timestamp::format_ms(ms))),
            ),
            (
                "timelimit",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    seconds(self.time_limit.hard),
                    seconds(self.time_limit.soft),
                ])),
            ),
            ("argsrepr", text(&args_repr)),
            ("kwargsrepr", text(&kwargs_repr)),
            ("origin", text(origin)),
            ("ignore_result", AMQPValue::Boolean(false)),
        ] {
            headers.insert(ShortString::from(key), value);
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_correlation_id(self.id.as_str().into())
            .with_delivery_mode(2)
            .with_priority(0)
            .with_headers(headers);
        if let Some(reply_to) = &self.reply_to {
            props = props.with_reply_to(reply_to.as_str().into());
        }
        (body, props)
    }

    /// Reads a delivered message; anything that is not a JSON protocol v2 task is an error.
    pub fn decode(props: &BasicProperties, body: &[u8]) -> Result<Self, DecodeError> {
        if let Some(ct) = props.content_type() {
            if ct.as_str() != "application/json" {
                return Err(DecodeError::ContentType(ct.as_str().to_string()));
            }
        }
        let headers = props.headers().as_ref();
        let header = |key: &'static str| {
            headers
                .and_then(|h| h.inner().get(key))
                .and_then(amqp_text)
                .ok_or(DecodeError::MissingHeader(key))
        };
        let task = header("task")?;
        let id = header("id")?;
        let retries = match headers.and_then(|h| h.inner().get("retries")) {
            None | Some(AMQPValue::Void) => 0,
            Some(v) => amqp_int(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| DecodeError::OutOfRange {
                    header: "retries",
                    got: amqp_repr(v),
                    min: 0,
                    max: i64::from(u32::MAX),
                })?,
        };

        let time = |key: &'static str| match headers.and_then(|h| h.inner().get(key)) {
            None | Some(AMQPValue::Void) => Ok(None),
            Some(v) => match amqp_text(v) {
                Some(t) => timestamp::parse_ms(&t)
                    .map(Some)
                    .map_err(|why| DecodeError::BadTime { header: key, why }),
                None => Err(DecodeError::BadTime {
                    header: key,
                    why: timestamp::BadTimestamp {
                        text: amqp_repr(v),
                        why: "not text".into(),
                    },
                }),
            },
        };
        let eta_ms = time("eta")?;
        let expires_ms = time("expires")?;
        let time_limit = match headers.and_then(|h| h.inner().get("timelimit")) {
            None | Some(AMQPValue::Void) => TimeLimit::default(),
            Some(v) => {
                time_limit(v).ok_or_else(|| DecodeError::BadTimeLimit { got: amqp_repr(v) })?
            }
        };

        let Body { args, kwargs } = serde_json::from_slice::<Shaped>(body)
            .map_err(|e| DecodeError::NotJson(e.to_string()))?
            .0
            .map_err(DecodeError::WrongShape)?;
        Ok(Self {
            id,
            task,
            args,
            kwargs,
            retries,
            reply_to: props.reply_to().as_ref().map(|s| s.as_str().to_string()),
            correlation_id: props
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_string()),
            eta_ms,
            expires_ms,
            time_limit,
        })
    }
}

/// A time limit longer than this is taken as this: a client's number must not overflow a
/// deadline (`Instant + Duration` panics), and no job is meant to run a year.
const LONGEST_LIMIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A limit as the header carries it: a number of seconds, or null.
fn seconds(limit: Option<Duration>) -> AMQPValue {
    limit.map_or(AMQPValue::Void, |d| AMQPValue::Double(d.as_secs_f64()))
}

/// `[hard, soft]`: each a number of seconds or null; `None` when it is not that shape. A limit
/// of zero or less is none (Celery tests the value for truth).
fn time_limit(v: &AMQPValue) -> Option<TimeLimit> {
    let AMQPValue::FieldArray(parts) = v else {
        return None;
    };
    let limit = |v: Option<&AMQPValue>| -> Option<Option<Duration>> {
        let secs = match v {
            None | Some(AMQPValue::Void) => return Some(None),
            Some(AMQPValue::Double(f)) => *f,
            Some(AMQPValue::Float(f)) => f64::from(*f),
            Some(other) => amqp_int(other)? as f64,
        };
        Some(
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .map(|d| d.min(LONGEST_LIMIT)),
        )
    };
    let parts = parts.as_slice();
    if parts.len() > 2 {
        return None;
    }
    Some(TimeLimit {
        hard: limit(parts.first())?,
        soft: limit(parts.get(1))?,
    })
}

/// A body's args and kwargs.
struct Body {
    args: Vec<Value>,
    kwargs: Map<String, Value>,
}

/// `[args, kwargs, embed]` read in one pass: the embed (callbacks, errbacks, chain, chord; cm
/// runs no canvas) is checked as JSON and skipped, not built. A body of the wrong shape is
/// `Err(why)` inside, apart from JSON that does not parse.
struct Shaped(Result<Body, &'static str>);

impl<'de> serde::Deserialize<'de> for Shaped {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

const SHAPE: &str = "expected [args, kwargs, embed]";

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shaped;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(SHAPE)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shaped, A::Error> {
        use serde::de::IgnoredAny;
        let args = seq.next_element::<Value>()?;
        let kwargs = seq.next_element::<Value>()?;
        seq.next_element::<IgnoredAny>()?;
        let mut more = false;
        // Read to the end: the parser checks the rest of the JSON either way.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more = true;
        }
        let (Some(args), Some(kwargs)) = (args, kwargs) else {
            return Ok(Shaped(Err(SHAPE)));
        };
        if more {
            return Ok(Shaped(Err(SHAPE)));
        }
        let kwargs = match kwargs {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Ok(Shaped(Err("kwargs is not an object"))),
        };
        let args = match args {
            Value::Array(list) => list,
            Value::Null => Vec::new(),
            _ => return Ok(Shaped(Err("args is not a list"))),
        };
        Ok(Shaped(Ok(Body { args, kwargs })))
    }

    // Any other JSON value: the wrong shape, not bad JSON.
    fn visit_bool<E>(self, _: bool) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_str<E>(self, _: &str) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_unit<E>(self) -> Result<Shaped, E> {
        Ok(Shaped(Err(SHAPE)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shaped, A::Error> {
        use serde::de::IgnoredAny;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shaped(Err(SHAPE)))
    }
}

fn amqp_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// A header value as an error message shows it.
fn amqp_repr(v: &AMQPValue) -> String {
    amqp_int(v)
        .map(|n| n.to_string())
        .or_else(|| amqp_text(v).map(|s| format!("{s:?}")))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn amqp_int(v: &AMQPValue) -> Option<i64> {
    match *v {
        AMQPValue::ShortShortInt(n) => Some(n.into()),
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::LongLongInt(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_then_decode_round_trips() -> Result<(), DecodeError> {
        let mut kwargs = Map::new();
        kwargs.insert("server".into(), json!("india_openstack_essex"));
        let msg = TaskMessage::new("cm.launch", vec![json!("i1")], kwargs);
        let (body, props) = msg.encode("cm@test");
        let embed = json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null});
        let expected = json!([msg.args, msg.kwargs, embed]).to_string();
        assert_eq!(String::from_utf8_lossy(&body), expected);
        let header = |key: &str| {
            props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(key).and_then(amqp_text))
        };
        assert_eq!(header("argsrepr").as_deref(), Some("['i1']"));
        assert_eq!(
            header("kwargsrepr").as_deref(),
            Some("{'server': 'india_openstack_essex'}")
        );
        let back = TaskMessage::decode(&props, &body)?;
        assert_eq!(back.id, msg.id);
        assert_eq!(back.task, "cm.launch");
        assert_eq!(back.args, vec![json!("i1")]);
        assert_eq!(back.kwargs["server"], json!("india_openstack_essex"));
        assert_eq!(
            props.correlation_id().as_ref().map(|s| s.as_str()),
            Some(msg.id.as_str())
        );
        assert_eq!(props.delivery_mode(), &Some(2));
        Ok(())
    }

    #[test]
    fn poison_bodies_are_named() {
        let (_, props) = TaskMessage::new("cm.launch", vec![], Map::new()).encode("t");
        assert!(matches!(
            TaskMessage::decode(&props, b"not json"),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            TaskMessage::decode(&props, b"{\"a\":1}"),
            Err(DecodeError::WrongShape(_))
        ));
        assert!(matches!(
            TaskMessage::decode(&props, b"[1, {}, {}]"),
            Err(DecodeError::WrongShape(_))
        ));
        assert_eq!(
            TaskMessage::decode(&BasicProperties::default(), b"[[], {}, {}]").map(|m| m.id),
            Err(DecodeError::MissingHeader("task"))
        );
        // The one-pass reading agrees with reading the whole body as a Value first.
        for body in [
            "[[], {}]",
            "[[], {}, {}]",
            r#"[["s", 1], {"a": [2, {"b": null}]}, {"callbacks": null, "chain": [{"x": 1}]}]"#,
            "[null, null, null]",
            "[[], {}, {}, 4]",
            "[[]]",
            "[]",
            "[[], 3, {}]",
            "[{}, {}, {}]",
            r#""str""#,
            "7",
            "-7",
            "7.5",
            "true",
            "null",
            r#"{"a": [1]}"#,
            "[[], {}, {",
            "[[], {}, {}] x",
            "[[], {}, {}],",
            "",
        ] {
            let got = TaskMessage::decode(&props, body.as_bytes()).map(|m| (m.args, m.kwargs));
            assert_eq!(got, whole_value_reading(body.as_bytes()), "{body}");
        }
        let pickle = props.with_content_type("application/x-python-serialize".into());
        assert!(matches!(
            TaskMessage::decode(&pickle, b"[[], {}, {}]"),
            Err(DecodeError::ContentType(_))
        ));
    }

    /// A `retries` header that is not a count is refused with its value and range; absent or
    /// null (what some clients send) is 0.
    #[test]
    fn a_retries_header_out_of_range_is_named() {
        let with_retries = |v: Option<AMQPValue>| {
            let (body, props) = TaskMessage::new("cm.launch", vec![], Map::new()).encode("t");
            let mut headers = props.headers().clone().unwrap_or_default();
            match v {
                Some(v) => {
                    headers.insert("retries".into(), v);
                }
                None => {
                    let mut kept = FieldTable::default();
                    for (k, v) in headers.inner() {
                        if k.as_str() != "retries" {
                            kept.insert(k.clone(), v.clone());
                        }
                    }
                    headers = kept;
                }
            }
            TaskMessage::decode(&props.with_headers(headers), &body).map(|m| m.retries)
        };
        assert_eq!(with_retries(Some(AMQPValue::LongLongInt(3))), Ok(3));
        assert_eq!(with_retries(Some(AMQPValue::Void)), Ok(0));
        assert_eq!(with_retries(None), Ok(0));
        for (bad, shown) in [
            (AMQPValue::LongLongInt(-1), "-1"),
            (AMQPValue::LongLongInt(1 << 40), "1099511627776"),
            (AMQPValue::LongString("3".into()), "\"3\""),
        ] {
            let err = with_retries(Some(bad)).map_err(|e| e.to_string());
            assert_eq!(
                err,
                Err(format!(
                    "header \"retries\" is {shown}: it must be a whole number from 0 to 4294967295"
                ))
            );
        }
    }

    /// `eta`, `expires` and `timelimit` as a Celery 5 client sends them: ISO times, and
    /// `[hard, soft]` seconds; what cm encodes reads back the same.
    #[test]
    fn eta_expires_and_timelimit_are_read() -> Result<(), DecodeError> {
        let (body, props) = TaskMessage::new("cm.launch", vec![], Map::new()).encode("t");
        let with = |pairs: &[(&str, AMQPValue)]| {
            let mut headers = props.headers().clone().unwrap_or_default();
            for (k, v) in pairs {
                headers.insert((*k).into(), v.clone());
            }
            TaskMessage::decode(&props.clone().with_headers(headers), &body)
        };
        let text = |s: &str| AMQPValue::LongString(s.into());
        let plain = with(&[])?;
        assert_eq!((plain.eta_ms, plain.expires_ms), (None, None));
        assert_eq!(plain.time_limit, TimeLimit::default());
        let got = with(&[
            ("eta", text("2026-12-01T22:05:43.123456+00:00")),
            ("expires", text("2026-12-01T23:05:43+01:00")),
            (
                "timelimit",
                AMQPValue::FieldArray(
                    vec![AMQPValue::LongLongInt(30), AMQPValue::Double(2.5)].into(),
                ),
            ),
        ])?;
        assert_eq!(got.eta_ms, Some(1_796_162_743_123));
        assert_eq!(got.expires_ms, Some(1_796_162_743_000));
        assert_eq!(got.time_limit.hard, Some(Duration::from_secs(30)));
        assert_eq!(got.time_limit.soft, Some(Duration::from_millis(2500)));
        assert_eq!(got.time_limit.enforced(), Some(Duration::from_secs(30)));
        let soft_only = with(&[(
            "timelimit",
            AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::LongLongInt(4)].into()),
        )])?;
        assert_eq!(
            soft_only.time_limit.enforced(),
            Some(Duration::from_secs(4))
        );
        // Zero or less is none; beyond a year is a year; a number too big for a duration, none.
        let odd = with(&[(
            "timelimit",
            AMQPValue::FieldArray(vec![AMQPValue::Double(-1.0), AMQPValue::Double(1e18)].into()),
        )])?;
        assert_eq!(odd.time_limit.hard, None);
        assert_eq!(odd.time_limit.soft, Some(LONGEST_LIMIT));
        let huge = with(&[(
            "timelimit",
            AMQPValue::FieldArray(vec![AMQPValue::Double(1e300)].into()),
        )])?;
        assert_eq!(huge.time_limit, TimeLimit::default());

        let (body2, props2) = got.encode("t");
        let back = TaskMessage::decode(&props2, &body2)?;
        assert_eq!(
            (back.eta_ms, back.expires_ms, back.time_limit),
            (got.eta_ms, got.expires_ms, got.time_limit)
        );

        assert!(matches!(
            with(&[("eta", text("tomorrow"))]),
            Err(DecodeError::BadTime { header: "eta", .. })
        ));
        assert!(matches!(
            with(&[("expires", AMQPValue::LongLongInt(5))]),
            Err(DecodeError::BadTime {
                header: "expires",
                ..
            })
        ));
        assert!(matches!(
            with(&[("timelimit", text("[1, 2]"))]),
            Err(DecodeError::BadTimeLimit { .. })
        ));
        Ok(())
    }

    /// The body read as one `Value`, then checked: how decode read it before its one pass.
    fn whole_value_reading(body: &[u8]) -> Result<(Vec<Value>, Map<String, Value>), DecodeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let Value::Array(mut parts) = value else {
            return Err(DecodeError::WrongShape(SHAPE));
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(DecodeError::WrongShape(SHAPE));
        }
        parts.truncate(2);
        let kwargs = match parts.pop() {
            Some(Value::Object(map)) => map,
            Some(Value::Null) => Map::new(),
            _ => return Err(DecodeError::WrongShape("kwargs is not an object")),
        };
        let args = match parts.pop() {
            Some(Value::Array(list)) => list,
            Some(Value::Null) => Vec::new(),
            _ => return Err(DecodeError::WrongShape("args is not a list")),
        };
        Ok((args, kwargs))
    }
}

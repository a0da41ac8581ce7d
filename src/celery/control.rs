//! Celery's remote control ("pidbox", `kombu/pidbox.py`): the request a client broadcasts on
//! the fanout exchange `celery.pidbox`, which node it addresses, and the envelope of the reply
//! that goes back to its `reply_to`. What each method answers is `replies.rs`.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The fanout exchange requests arrive on (`<control_exchange>.pidbox`, Celery's default
/// `celery`): durable false, auto-delete false, or the broker refuses the redeclare (406).
pub const EXCHANGE: &str = "celery.pidbox";
/// Where kombu's clients wait for replies: direct, durable false.
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// Celery's `control_queue_expires` (10 s) and `control_queue_ttl` (300 s), in milliseconds.
pub const QUEUE_EXPIRES_MS: i64 = 10_000;
pub const QUEUE_MESSAGE_TTL_MS: i64 = 300_000;

/// A node's own queue, bound to [`EXCHANGE`]: `p1@host.celery.pidbox`.
pub fn queue_name(node: &str) -> String {
    format!("{node}.celery.pidbox")
}

/// Where the reply goes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReplyTo {
    pub exchange: String,
    pub routing_key: String,
}

/// One request, as `Mailbox._publish` writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Request {
    pub method: String,
    /// The method's keyword arguments; kombu sends `{}` when there are none, some clients null.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub arguments: Map<String, Value>,
    /// Node names; null or empty means every node.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub matcher: Option<String>,
    /// The reply's `ticket` header, so the client tells its replies from others'.
    #[serde(default)]
    pub ticket: Option<String>,
    /// None for a cast (`Mailbox.cast`, `abcast`): the node answers nobody.
    #[serde(default)]
    pub reply_to: Option<ReplyTo>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(de)?.unwrap_or_default())
}

/// Why a request is not for this node, when it is not.
#[derive(Debug, PartialEq)]
pub enum NotForUs {
    /// Addressed to other nodes, or to a pattern this node does not match.
    Elsewhere,
    /// A matcher cm does not have (kombu knows `glob` and `pcre`; cm only `glob`).
    UnknownMatcher(String),
}

impl Request {
    /// Reads a request body; anything else (not JSON, no `method`) is an error to log and drop.
    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Whether `node` answers, by kombu's rule (`Node.handle_message`): a non-empty destination
    /// must name it; else a pattern with a matcher must match it; else everyone answers.
    pub fn addressed_to(&self, node: &str) -> Result<(), NotForUs> {
        if let Some(names) = self.destination.as_ref().filter(|d| !d.is_empty()) {
            return if names.iter().any(|n| n == node) {
                Ok(())
            } else {
                Err(NotForUs::Elsewhere)
            };
        }
        match (self.pattern.as_deref(), self.matcher.as_deref()) {
            (Some(pattern), Some(matcher)) if !pattern.is_empty() && !matcher.is_empty() => {
                match matcher {
                    "glob" if glob_match(pattern, node) => Ok(()),
                    "glob" => Err(NotForUs::Elsewhere),
                    other => Err(NotForUs::UnknownMatcher(other.to_string())),
                }
            }
            _ => Ok(()),
        }
    }

    /// The named argument as text, if the client sent one.
    pub fn text_argument(&self, name: &str) -> Option<&str> {
        self.arguments.get(name).and_then(Value::as_str)
    }

    /// `task_id` as `revoke` and `terminate` take it: one id or a list (Celery's `maybe_list`),
    /// each once (Celery makes a set of them), in the order sent; what is not text is left out.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let mut add = |v: &Value| {
            if let Some(id) = v.as_str() {
                if !ids.iter().any(|known| known == id) {
                    ids.push(id.to_string());
                }
            }
        };
        match self.arguments.get("task_id") {
            Some(Value::Array(list)) => list.iter().for_each(&mut add),
            Some(one) => add(one),
            None => {}
        }
        ids
    }

    /// The named argument as a whole number (`pool_grow n`, `autoscale max min`): a number,
    /// or text that reads as one.
    pub fn count_argument(&self, name: &str) -> Option<i64> {
        match self.arguments.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The named argument as a flag (Flower sends `safe=True` to `active`).
    pub fn flag_argument(&self, name: &str) -> bool {
        self.arguments
            .get(name)
            .is_some_and(|v| v.as_bool().unwrap_or(false))
    }
}

/// Python's `fnmatch.fnmatchcase`, as kombu's `glob` matcher uses it on POSIX: `*` any run of
/// characters, `?` any one, `[abc]`/`[a-z]` a set, `[!abc]` its complement; case matters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative with one backtrack point (the last `*`): linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some('[') => {
                if let Some((matched, next)) = class_match(&p, pi, t[ti]) {
                    if matched {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                } else if t[ti] == '[' {
                    // An unclosed `[` is a literal, as in fnmatch.
                    pi += 1;
                    ti += 1;
                    continue;
                }
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The set at `p[start] == '['` against `c`: whether it matches and where the pattern goes on;
/// None when the `[` is never closed.
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &here = p.get(i)?;
        if here == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = p[i + 2];
            matched |= here <= c && c <= end;
            i += 3;
        } else {
            matched |= here == c;
            i += 1;
        }
    }
}

/// The request's `clock` header (0 when absent: clients without a clock send none).
pub fn request_clock(props: &BasicProperties) -> u64 {
    let Some(headers) = props.headers() else {
        return 0;
    };
    match headers.inner().get("clock") {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortShortUInt(n)) => u64::from(*n),
        _ => 0,
    }
}

/// A reply's body: `{"<node>": reply}`, which `flatten_reply` merges across nodes.
pub fn reply_body(node: &str, reply: &Value) -> Vec<u8> {
    let mut body = Map::new();
    body.insert(node.to_string(), reply.clone());
    // A map of JSON values always serialises.
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

/// A reply's properties, as `Mailbox._publish_reply` sends them: JSON, transient, headers
/// `ticket` (the request's) and `clock` (this node's, one tick on).
pub fn reply_properties(ticket: Option<&str>, clock: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("ticket"),
        match ticket {
            Some(t) => AMQPValue::LongString(LongString::from(t.as_bytes())),
            None => AMQPValue::Void,
        },
    );
    headers.insert(
        ShortString::from("clock"),
        AMQPValue::LongLongInt(i64::try_from(clock).unwrap_or(i64::MAX)),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> Request {
        match Request::decode(v.to_string().as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{v}: {e}"),
        }
    }

    #[test]
    fn task_ids_are_one_or_a_list_each_once() {
        let one = request(json!({"method": "revoke", "arguments": {"task_id": "a"}}));
        assert_eq!(one.task_ids(), ["a"]);
        let many =
            request(json!({"method": "revoke", "arguments": {"task_id": ["b", "a", "b", 7]}}));
        assert_eq!(many.task_ids(), ["b", "a"]);
        let none = request(json!({"method": "revoke", "arguments": {}}));
        assert!(none.task_ids().is_empty());
    }

    #[test]
    fn a_kombu_request_decodes_with_its_reply_address() {
        // As kombu 5 publishes `celery inspect ping -d p1@h`.
        let r = request(json!({
            "method": "ping", "arguments": {}, "destination": ["p1@h"],
            "pattern": null, "matcher": null,
            "ticket": "6b1c5f0e-5b4e-4d49-9c4b-0d1d8d6e9f10",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "a1b2"}
        }));
        assert_eq!(r.method, "ping");
        assert_eq!(
            r.reply_to,
            Some(ReplyTo {
                exchange: REPLY_EXCHANGE.into(),
                routing_key: "a1b2".into()
            })
        );
        assert_eq!(
            r.ticket.as_deref(),
            Some("6b1c5f0e-5b4e-4d49-9c4b-0d1d8d6e9f10")
        );
        // A cast: no ticket, no reply_to, arguments null.
        let cast = request(json!({"method": "heartbeat", "arguments": null}));
        assert!(cast.reply_to.is_none() && cast.arguments.is_empty());
    }

    #[test]
    fn what_is_not_a_request_is_an_error() {
        for body in [&b"not json"[..], b"[]", b"{}", b"{\"method\": 3}", b""] {
            assert!(
                Request::decode(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn destination_then_pattern_then_everyone() {
        let to = |v: Value| request(v).addressed_to("p1@h");
        assert_eq!(to(json!({"method": "ping"})), Ok(()));
        assert_eq!(to(json!({"method": "ping", "destination": null})), Ok(()));
        assert_eq!(to(json!({"method": "ping", "destination": []})), Ok(()));
        assert_eq!(
            to(json!({"method": "ping", "destination": ["x@h", "p1@h"]})),
            Ok(())
        );
        assert_eq!(
            to(json!({"method": "ping", "destination": ["p2@h"]})),
            Err(NotForUs::Elsewhere)
        );
        // A destination wins over a pattern that would match.
        assert_eq!(
            to(
                json!({"method": "ping", "destination": ["p2@h"], "pattern": "*", "matcher": "glob"})
            ),
            Err(NotForUs::Elsewhere)
        );
        assert_eq!(
            to(json!({"method": "ping", "pattern": "p*@h", "matcher": "glob"})),
            Ok(())
        );
        assert_eq!(
            to(json!({"method": "ping", "pattern": "l*", "matcher": "glob"})),
            Err(NotForUs::Elsewhere)
        );
        // A pattern without a matcher addresses everyone, as in kombu.
        assert_eq!(to(json!({"method": "ping", "pattern": "l*"})), Ok(()));
        assert_eq!(
            to(json!({"method": "ping", "pattern": "p.*", "matcher": "pcre"})),
            Err(NotForUs::UnknownMatcher("pcre".into()))
        );
    }

    #[test]
    fn glob_matches_as_fnmatchcase_does() {
        for (pattern, text, expected) in [
            ("*", "p1@h", true),
            ("", "", true),
            ("", "a", false),
            ("p?@h", "p1@h", true),
            ("p?@h", "p10@h", false),
            ("p*@h", "p10@h", true),
            ("*@host-*", "l1@host-2", true),
            ("*@host-*", "l1@other", false),
            ("p[12]@h", "p2@h", true),
            ("p[12]@h", "p3@h", false),
            ("p[!12]@h", "p3@h", true),
            ("p[!12]@h", "p1@h", false),
            ("p[0-9]@h", "p7@h", true),
            ("p[]]", "p]", true),
            ("p[", "p[", true),
            ("P1@h", "p1@h", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "", true),
        ] {
            assert_eq!(
                glob_match(pattern, text),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn the_reply_is_keyed_by_node_with_ticket_and_clock_headers() {
        let body = reply_body("p1@h", &json!({"ok": "pong"}));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).ok(),
            Some(json!({"p1@h": {"ok": "pong"}}))
        );
        let props = reply_properties(Some("t-1"), 42);
        assert_eq!(props.delivery_mode(), &Some(1));
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        let headers = props.headers().clone().unwrap_or_default();
        assert_eq!(
            headers.inner().get("ticket"),
            Some(&AMQPValue::LongString("t-1".into()))
        );
        assert_eq!(request_clock(&props), 42, "the clock header reads back");
        assert_eq!(request_clock(&BasicProperties::default()), 0);
    }

    #[test]
    fn arguments_read_as_text_and_flags() {
        let r =
            request(json!({"method": "hello", "arguments": {"from_node": "x@h", "safe": true}}));
        assert_eq!(r.text_argument("from_node"), Some("x@h"));
        assert!(r.flag_argument("safe"));
        assert!(!r.flag_argument("nope"));
    }
}

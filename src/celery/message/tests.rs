use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};
use std::time::Duration;

use super::body::SHAPE;
use super::headers::{amqp_text, LONGEST_LIMIT};
use super::{DecodeError, TaskMessage, TimeLimit};

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
            AMQPValue::FieldArray(vec![AMQPValue::LongLongInt(30), AMQPValue::Double(2.5)].into()),
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

#[test]
fn a_canvas_round_trips_in_the_embed_and_the_headers() -> Result<(), DecodeError> {
    let mut msg = TaskMessage::new("t.add", vec![json!(1)], Map::new());
    let next = json!({"task": "t.add", "args": [2], "kwargs": {}, "options": {"task_id": "b"},
                      "subtask_type": null, "immutable": false});
    msg.embed.chain = Some(vec![next.clone()]);
    msg.embed.errbacks = Some(vec![next.clone()]);
    msg.group = Some("g".into());
    msg.group_index = Some(3);
    msg.parent_id = Some("p".into());
    msg.root_id = Some("r".into());
    let (body, props) = msg.encode("cm@test");
    let back = TaskMessage::decode(&props, &body)?;
    assert_eq!(back.embed, msg.embed);
    assert_eq!(back.embed.chain, Some(vec![next]));
    assert_eq!(
        (back.group, back.group_index, back.parent_id, back.root_id),
        (
            Some("g".into()),
            Some(3),
            Some("p".into()),
            Some("r".into())
        )
    );
    Ok(())
}

#[test]
fn an_embed_of_the_wrong_shape_is_refused_and_a_missing_one_is_plain() {
    let props = BasicProperties::default().with_headers({
        let mut h = FieldTable::default();
        h.insert("task".into(), AMQPValue::LongString("t".into()));
        h.insert("id".into(), AMQPValue::LongString("i".into()));
        h
    });
    let bad = TaskMessage::decode(&props, br#"[[], {}, {"chain": "no"}]"#);
    assert!(matches!(bad, Err(DecodeError::WrongShape(_))), "{bad:?}");
    let plain = TaskMessage::decode(&props, br#"[[], {}]"#).map(|m| m.embed.is_plain());
    assert_eq!(plain, Ok(true));
}

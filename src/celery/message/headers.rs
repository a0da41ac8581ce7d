//! The header values, as AMQP field values: text, whole numbers and the `timelimit` pair
//! read, limits written as seconds, and a value as an error shows it.

use lapin::types::AMQPValue;
use std::time::Duration;

use super::TimeLimit;

/// A time limit longer than this is taken as this: a client's number must not overflow a
/// deadline (`Instant + Duration` panics), and no job is meant to run a year.
pub(super) const LONGEST_LIMIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A limit as the header carries it: a number of seconds, or null.
pub(super) fn seconds(limit: Option<Duration>) -> AMQPValue {
    limit.map_or(AMQPValue::Void, |d| AMQPValue::Double(d.as_secs_f64()))
}

/// `[hard, soft]`: each a number of seconds or null; `None` when it is not that shape. A limit
/// of zero or less is none (Celery tests the value for truth).
pub(super) fn time_limit(v: &AMQPValue) -> Option<TimeLimit> {
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

pub(super) fn amqp_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// A header value as an error message shows it.
pub(super) fn amqp_repr(v: &AMQPValue) -> String {
    amqp_int(v)
        .map(|n| n.to_string())
        .or_else(|| amqp_text(v).map(|s| format!("{s:?}")))
        .unwrap_or_else(|| format!("{v:?}"))
}

pub(super) fn amqp_int(v: &AMQPValue) -> Option<i64> {
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

//! A delivered message read and checked: its content type, the headers a task needs, the
//! retries, times and time limit, and the body's shape; what is wrong is a [`DecodeError`].

use lapin::types::AMQPValue;
use lapin::BasicProperties;

use super::body::{Body, Shaped};
use super::headers::{amqp_int, amqp_repr, amqp_text, time_limit};
use super::{DecodeError, TaskMessage, TimeLimit};
use crate::celery::timestamp;

impl TaskMessage {
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

        let text = |key: &str| headers.and_then(|h| h.inner().get(key)).and_then(amqp_text);
        let group_index = headers
            .and_then(|h| h.inner().get("group_index"))
            .and_then(amqp_int);
        let Body {
            args,
            kwargs,
            embed,
        } = serde_json::from_slice::<Shaped>(body)
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
            priority: props.priority().unwrap_or(0),
            embed,
            group: text("group"),
            group_index,
            parent_id: text("parent_id"),
            root_id: text("root_id"),
        })
    }
}

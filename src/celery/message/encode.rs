//! A task message written exactly as a Celery 5 client sends it: the body, the headers and the
//! AMQP properties.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use super::headers::seconds;
use super::TaskMessage;
use crate::celery::timestamp;

/// The body's third part: no callbacks, errbacks, chain or chord (keys in serde_json's order).
const EMBED: &str = r#"{"callbacks":null,"chain":null,"chord":null,"errbacks":null}"#;

impl TaskMessage {
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
        // A plain job's embed is the constant; a canvas's signatures always serialise.
        let embed = if self.embed.is_plain() {
            std::borrow::Cow::Borrowed(EMBED)
        } else {
            std::borrow::Cow::Owned(serde_json::to_string(&self.embed).unwrap_or_default())
        };
        let mut body = Vec::with_capacity(args.len() + kwargs.len() + embed.len() + 4);
        for part in [
            b"[".as_slice(),
            args.as_bytes(),
            b",",
            kwargs.as_bytes(),
            b",",
            embed.as_bytes(),
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
            ("root_id", text(self.root_id.as_deref().unwrap_or(&self.id))),
            (
                "parent_id",
                self.parent_id.as_deref().map_or(AMQPValue::Void, text),
            ),
            ("group", self.group.as_deref().map_or(AMQPValue::Void, text)),
            (
                "group_index",
                self.group_index
                    .map_or(AMQPValue::Void, AMQPValue::LongLongInt),
            ),
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
            .with_priority(self.priority)
            .with_headers(headers);
        if let Some(reply_to) = &self.reply_to {
            props = props.with_reply_to(reply_to.as_str().into());
        }
        (body, props)
    }
}

//! `cm dead list|requeue`: the messages workers moved to `<queue>.dead`, with their reasons.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::amqp::{self, Publisher};
use crate::config::Config;
use crate::exit::{CmError, Code};

#[derive(Debug, Serialize)]
struct DeadLetter {
    queue: String,
    reason: String,
    task: Option<String>,
    id: Option<String>,
    body: String,
}

fn text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn queues<'a>(cfg: &'a Config, only: Option<&'a str>) -> Result<Vec<&'a str>, CmError> {
    let all: Vec<&str> = cfg.queues.iter().map(|q| q.name.as_str()).collect();
    match only {
        None => Ok(all),
        Some(q) if all.contains(&q) => Ok(vec![q]),
        Some(q) => Err(CmError::BadArgument(format!(
            "unknown queue {q:?}: this config has {}",
            all.join(", ")
        ))),
    }
}

/// Whether work queue `name` is a quorum queue, and so its `.dead` (see amqp::declare_dead_queue).
fn quorum(cfg: &Config, name: &str) -> bool {
    cfg.queues.iter().any(|c| c.name == name && c.quorum)
}

pub async fn list(cfg: &Config, only: Option<&str>, json: bool) -> anyhow::Result<Code> {
    let queues = queues(cfg, only)?;
    let conn = amqp::Brokers::of(cfg).connect("cm dead list").await?;
    let channel = conn.create_channel().await?;
    let mut found = Vec::new();
    let mut last_tag = None;
    for q in queues {
        let dead = format!("{q}.dead");
        amqp::declare_dead_queue(&channel, &cfg.broker_url, q, quorum(cfg, q)).await?;
        // Peek: take every message unacked, then hand them all back at the end.
        while let Some(msg) = channel
            .basic_get(dead.as_str().into(), BasicGetOptions::default())
            .await?
        {
            last_tag = Some(msg.delivery.delivery_tag);
            let headers = msg.delivery.properties.headers().as_ref();
            found.push(DeadLetter {
                queue: q.to_string(),
                reason: text(headers, "x-cm-reason")
                    .unwrap_or_else(|| "(no reason recorded)".into()),
                task: text(headers, "task"),
                id: text(headers, "id"),
                body: String::from_utf8_lossy(&msg.delivery.data)
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
    }
    // Handed back by an explicit nack, not left to the channel's close: from RabbitMQ 4.3 a
    // nack is documented not to count toward a quorum queue's delivery limit ("Negative
    // Acknowledgements"), and a quorum `.dead` must survive any number of `cm dead list`s.
    // Before 4.3 every return counts (4.0-4.2 then drop at 20 by default; 3.x sets no limit):
    // docs/deploy/several-hosts.md says what to set there.
    if let Some(tag) = last_tag {
        let back = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        channel.basic_nack(tag, back).await?;
    }
    let _ = channel.close(200, "peeked".into()).await;
    let _ = conn.close(200, "done".into()).await;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        crate::outln!("no dead letters");
    } else {
        for d in &found {
            crate::outln!(
                "{}.dead  {}  {}  {}",
                d.queue,
                d.id.as_deref().unwrap_or("-"),
                d.task.as_deref().unwrap_or("-"),
                d.reason
            );
        }
    }
    Ok(Code::Success)
}

pub async fn requeue(cfg: &Config, only: Option<&str>) -> anyhow::Result<Code> {
    let queues = queues(cfg, only)?;
    let brokers = amqp::Brokers::of(cfg);
    let conn = std::sync::Arc::new(brokers.connect("cm dead requeue").await?);
    let publisher = Publisher::open(&conn, &brokers.current_node(), "cm").await?;
    let channel = conn.create_channel().await?;
    let mut moved = 0;
    for q in queues {
        let dead = format!("{q}.dead");
        // Only what is there now: a message that is still poison comes straight back, and must
        // not be taken again in this same run.
        let waiting =
            amqp::declare_dead_queue(&channel, &cfg.broker_url, q, quorum(cfg, q)).await?;
        for _ in 0..waiting {
            let Some(msg) = channel
                .basic_get(dead.as_str().into(), BasicGetOptions::default())
                .await?
            else {
                break;
            };
            let mut props = msg.delivery.properties.clone();
            if let Some(h) = props.headers().as_ref() {
                let kept: std::collections::BTreeMap<_, _> = h
                    .inner()
                    .iter()
                    .filter(|(k, _)| !k.as_str().starts_with("x-cm-"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                props = props.with_headers(FieldTable::from(kept));
            }
            match publisher
                .publish_confirmed(q, &msg.delivery.data, props)
                .await
            {
                Ok(()) => {
                    msg.delivery.ack(BasicAckOptions::default()).await?;
                    moved += 1;
                }
                Err(e) => {
                    let _ = msg
                        .delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        })
                        .await;
                    return Err(e.into());
                }
            }
        }
    }
    let _ = conn.close(200, "done".into()).await;
    crate::outln!("requeued {moved} dead letter(s)");
    Ok(Code::Success)
}

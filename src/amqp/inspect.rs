//! Workers on every host, through the broker (what `celery inspect ping` and Flower did).
//!
//! Each worker binds a private queue to the fanout exchange `cm.control`; `cm queue status --all`
//! publishes one ping there with a reply queue, and every worker of the asked-about queues answers
//! with its own status. No ssh, no shared pid dir.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};

use crate::amqp::{self, BrokerError};
use crate::config::Config;

pub const CONTROL_EXCHANGE: &str = "cm.control";

/// How long `status --all` listens for answers; a live worker answers in milliseconds.
const LISTEN: Duration = Duration::from_millis(800);

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    /// Only workers of these queues answer, so two deployments on one broker stay apart.
    queues: Vec<String>,
}

/// One worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteWorker {
    pub node: String,
    pub name: String,
    pub host: String,
    pub queue: String,
    pub pid: u32,
    pub state: String,
    pub uptime_seconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// The broker node it is connected to, its password hidden (an older worker says none).
    #[serde(default)]
    pub broker: Option<String>,
    /// Job slots now and asked for (`cm queue scale`); none from an older worker.
    #[serde(default)]
    pub concurrency: Option<u16>,
    #[serde(default)]
    pub desired_concurrency: Option<u16>,
}

fn protocol(cfg_url: &str, context: &str) -> impl FnOnce(lapin::Error) -> BrokerError {
    let url = crate::config::urls::redact(cfg_url);
    let context = context.to_string();
    move |cause| BrokerError::Protocol {
        url,
        context,
        cause,
    }
}

async fn declare_exchange(channel: &Channel, url: &str) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            CONTROL_EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(protocol(url, "declaring the control exchange"))
}

/// Worker side: answers pings for `queue` with `status()` until the connection ends.
pub async fn answer_pings(
    conn: &Connection,
    url: &str,
    queue: String,
    status: impl Fn() -> RemoteWorker + Send + 'static,
) -> Result<(), BrokerError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(protocol(url, "opening the control channel"))?;
    declare_exchange(&channel, url).await?;
    let inbox = amqp::private_queue(&channel, url).await?;
    channel
        .queue_bind(
            inbox.as_str().into(),
            CONTROL_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(protocol(url, "binding to the control exchange"))?;
    let mut pings =
        amqp::consume_unacked(&channel, url, &inbox, "consuming control messages").await?;
    tokio::spawn(async move {
        while let Some(Ok(msg)) = pings.next().await {
            let Ok(ping) = serde_json::from_slice::<Ping>(&msg.data) else {
                continue;
            };
            let Some(reply_to) = msg.properties.reply_to().clone() else {
                continue;
            };
            if !ping.queues.contains(&queue) {
                continue;
            }
            let Ok(body) = serde_json::to_vec(&status()) else {
                continue;
            };
            let _ = channel
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await;
        }
    });
    Ok(())
}

/// `cm queue status --all`: every worker of this config's queues that answers, on any host.
pub async fn ping_all(cfg: &Config) -> Result<Vec<RemoteWorker>, BrokerError> {
    let url = &cfg.broker_url;
    let conn = amqp::Brokers::of(cfg).connect("cm status --all").await?;
    let channel = conn
        .create_channel()
        .await
        .map_err(protocol(url, "opening a channel"))?;
    declare_exchange(&channel, url).await?;
    let inbox = amqp::private_queue(&channel, url).await?;
    let mut replies = amqp::consume_unacked(&channel, url, &inbox, "consuming replies").await?;
    let ping = Ping {
        queues: cfg.queues.iter().map(|q| q.name.clone()).collect(),
    };
    let body = serde_json::to_vec(&ping).map_err(|e| BrokerError::Protocol {
        url: crate::config::urls::redact(url),
        context: "encoding the ping".into(),
        cause: lapin::Error::from(std::io::Error::other(e)),
    })?;
    channel
        .basic_publish(
            CONTROL_EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_reply_to(inbox.as_str().into()),
        )
        .await
        .map_err(protocol(url, "sending the ping"))?;
    let mut found: Vec<RemoteWorker> = Vec::new();
    let deadline = tokio::time::Instant::now() + LISTEN;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(w) = serde_json::from_slice::<RemoteWorker>(&msg.data) {
            found.push(w);
        }
    }
    let _ = conn.close(200, "status --all done".into()).await;
    found.sort_by(|a, b| (&a.queue, &a.host, &a.name).cmp(&(&b.queue, &b.host, &b.name)));
    Ok(found)
}

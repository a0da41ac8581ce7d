//! RabbitMQ through lapin: connect (with errors an operator can act on), declare, publish confirmed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind};

use crate::config::QueueConfig;
use crate::protocol::TaskMessage;

/// A blackholed host must not hang `cm queue start`; a live broker answers well within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no broker at {url}: {reason} (start RabbitMQ with `make up` or `rabbitmq-server -detached`, or fix [broker] url in fabfile.toml)")]
    Unreachable { url: String, reason: String },
    #[error(
        "broker at {url} refused the login: {reason} (check the user and password in [broker] url)"
    )]
    AccessRefused { url: String, reason: String },
    #[error("broker at {url} refused the virtual host: {reason} (create it with `rabbitmqctl add_vhost` or fix [broker] url)")]
    VhostRefused { url: String, reason: String },
    #[error("broker at {url}: {context}: {cause}")]
    Protocol {
        url: String,
        context: String,
        cause: lapin::Error,
    },
    #[error("broker at {url} did not confirm the publish of {id} to queue {queue}")]
    Nacked {
        url: String,
        queue: String,
        id: String,
    },
}

/// The URL with its password hidden, for messages and logs: `amqp://guest:***@host/%2f`. A
/// list of URLs separated by `;` is redacted one by one. Without credentials a URL is returned
/// as given; one the `url` crate cannot parse loses everything before its last `@`.
pub fn redact(url: &str) -> String {
    split_urls(url)
        .iter()
        .map(|u| redact_one(u))
        .collect::<Vec<_>>()
        .join(";")
}

/// The URLs of a `;`-separated list, as Celery's `broker_url` takes several nodes of a cluster.
/// A `;` starts the next URL only where a scheme follows: a password may hold one too.
pub fn split_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in list.split(';') {
        match urls.last_mut() {
            Some(last) if !starts_with_scheme(piece) => {
                last.push(';');
                last.push_str(piece);
            }
            _ if piece.trim().is_empty() => {}
            _ => urls.push(piece.trim().to_string()),
        }
    }
    urls
}

fn starts_with_scheme(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn redact_one(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials, and these have none.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match (url.split_once("://"), url.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
            _ => url.to_string(),
        },
    }
}

/// Heartbeats let a worker see a dead broker (or a cut link) within ~2x this, instead of
/// stalling silently.
pub const HEARTBEAT_SECONDS: u16 = 10;
/// lapin keeps 32 frames of buffer each way, zero-filled: at RabbitMQ's default 128 KiB frames
/// that is 8 MiB per process. Job messages are well under 1 KiB; 8 KiB frames keep it at 512 KiB.
const FRAME_MAX: u32 = 8192;

/// The URL with cm's connection tuning added; a `heartbeat=` or `frame_max=` in the configured
/// URL wins.
fn tuned(url: &str) -> String {
    let mut url = url.to_string();
    for (key, value) in [
        ("heartbeat", u32::from(HEARTBEAT_SECONDS)),
        ("frame_max", FRAME_MAX),
    ] {
        if !url.contains(&format!("{key}=")) {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}{key}={value}");
        }
    }
    url
}

/// Which URL of the list this process reached last: the next connect tries it first, the
/// next after a loss (`lost`) tries the one after it first.
static PREFERRED: AtomicUsize = AtomicUsize::new(0);

/// Connects to the first node of `urls` (a `;`-separated list, or one URL) that answers,
/// beginning with the one reached last; the connection is named so `rabbitmqctl
/// list_connections` shows who it is. With every node refusing, the error is the last one's.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, BrokerError> {
    let list = split_urls(urls);
    let first = PREFERRED.load(Ordering::Relaxed);
    let mut last_error = None;
    for k in 0..list.len().max(1) {
        let i = (first + k) % list.len().max(1);
        let Some(url) = list.get(i) else { break };
        match connect_one(url, name).await {
            Ok(conn) => {
                PREFERRED.store(i, Ordering::Relaxed);
                if k > 0 {
                    tracing::info!("connected to {} (of {} nodes)", redact(url), list.len());
                }
                return Ok(conn);
            }
            Err(e) => {
                if list.len() > 1 {
                    tracing::warn!("{e}; trying the next node");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| BrokerError::Unreachable {
        url: String::new(),
        reason: "no broker URL configured".into(),
    }))
}

/// The connection to the node reached last was lost: the next connect tries another first.
pub fn lost() {
    PREFERRED.fetch_add(1, Ordering::Relaxed);
}

/// `host:port` of a broker URL, the short name a status table shows for a node.
pub fn host_port(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 })
        ),
        Err(_) => redact(url),
    }
}

/// The node of the list this process reached last (redacted), for status lines.
pub fn current_node(urls: &str) -> String {
    let list = split_urls(urls);
    list.get(PREFERRED.load(Ordering::Relaxed) % list.len().max(1))
        .map(|u| redact(u))
        .unwrap_or_default()
}

async fn connect_one(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let shown = redact(url);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let url = tuned(url);
    let result = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, props)).await;
    match result {
        Err(_) => Err(BrokerError::Unreachable {
            url: shown,
            reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify(&shown, e)),
    }
}

fn classify(url: &str, e: lapin::Error) -> BrokerError {
    let url = url.to_string();
    let text = e.to_string();
    match e.kind() {
        ErrorKind::IOError(io) => BrokerError::Unreachable {
            url,
            reason: io.to_string(),
        },
        ErrorKind::ProtocolError(_) if text.contains("ACCESS_REFUSED") => {
            BrokerError::AccessRefused { url, reason: text }
        }
        ErrorKind::ProtocolError(_) if text.contains("NOT_ALLOWED") => {
            BrokerError::VhostRefused { url, reason: text }
        }
        // RabbitMQ drops the socket on a bad login before AMQP 0-9-1 can say why.
        ErrorKind::InvalidConnectionState(_) => BrokerError::AccessRefused {
            url,
            reason: format!("connection closed during login ({text})"),
        },
        _ => BrokerError::Protocol {
            url,
            context: "connecting".into(),
            cause: e,
        },
    }
}

/// Declares a queue durable with no x-arguments, so a Celery client's own declare matches.
/// Returns how many messages are waiting in it.
pub async fn declare_queue(channel: &Channel, url: &str, queue: &str) -> Result<u32, BrokerError> {
    declare(channel, url, queue, FieldTable::default()).await
}

/// Declares a configured work queue: classic with no arguments, or quorum when configured
/// (Celery clients then need `queue_arguments={"x-queue-type": "quorum"}`, see the docs).
pub async fn declare_work_queue(
    channel: &Channel,
    url: &str,
    queue: &QueueConfig,
) -> Result<u32, BrokerError> {
    let mut args = FieldTable::default();
    if queue.quorum {
        // A short string here makes the broker drop the connection: it must be a long string.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    declare(channel, url, &queue.name, args).await
}

async fn declare(
    channel: &Channel,
    url: &str,
    queue: &str,
    args: FieldTable,
) -> Result<u32, BrokerError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map(|q| q.message_count())
        .map_err(|cause| BrokerError::Protocol {
            url: redact(url),
            context: format!("declaring queue {queue}"),
            cause,
        })
}

/// A channel in confirm mode for persistent, confirmed publishing.
pub struct Publisher {
    channel: Channel,
    url: String,
    origin: String,
}

impl Publisher {
    pub async fn open(conn: &Connection, url: &str, origin: &str) -> Result<Self, BrokerError> {
        let err = |context: &str| {
            let url = redact(url);
            let context = context.to_string();
            move |cause| BrokerError::Protocol {
                url,
                context,
                cause,
            }
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(err("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err("enabling publisher confirms"))?;
        Ok(Self {
            channel,
            url: url.to_string(),
            origin: origin.to_string(),
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends every message to `queue` without waiting for the broker: hand the result to
    /// [`Publisher::confirmed`]. Frames go out while the caller does other work (pipelining).
    pub async fn send_all<'m>(
        &self,
        queue: &str,
        messages: &'m [TaskMessage],
    ) -> Result<Vec<(&'m TaskMessage, lapin::PublisherConfirm)>, BrokerError> {
        let mut pending = Vec::with_capacity(messages.len());
        for msg in messages {
            let (body, props) = msg.encode(&self.origin);
            let confirm = self
                .publish_raw(queue, &body, props)
                .await
                .map_err(|source| self.protocol_error(queue, source))?;
            pending.push((msg, confirm));
        }
        Ok(pending)
    }

    /// Returns once the broker confirmed every message [`Publisher::send_all`] sent.
    pub async fn confirmed(
        &self,
        queue: &str,
        pending: Vec<(&TaskMessage, lapin::PublisherConfirm)>,
    ) -> Result<(), BrokerError> {
        for (msg, confirm) in pending {
            let outcome = confirm
                .await
                .map_err(|source| self.protocol_error(queue, source))?;
            if !outcome.is_ack() || outcome.take_message().is_some() {
                return Err(BrokerError::Nacked {
                    url: redact(&self.url),
                    queue: queue.to_string(),
                    id: msg.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Publishes one body (mandatory, so an unroutable message comes back instead of vanishing).
    pub async fn publish_raw(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
    }

    /// Publishes one body and waits for its confirm.
    pub async fn publish_confirmed(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .publish_raw(queue, body, props)
            .await
            .map_err(|source| self.protocol_error(queue, source))?;
        let outcome = confirm
            .await
            .map_err(|source| self.protocol_error(queue, source))?;
        if outcome.is_ack() && outcome.take_message().is_none() {
            Ok(())
        } else {
            Err(BrokerError::Nacked {
                url: redact(&self.url),
                queue: queue.to_string(),
                id: String::new(),
            })
        }
    }

    fn protocol_error(&self, queue: &str, cause: lapin::Error) -> BrokerError {
        BrokerError::Protocol {
            url: redact(&self.url),
            context: format!("publishing to queue {queue}"),
            cause,
        }
    }
}

/// A private, server-named queue that goes away with the connection.
pub async fn private_queue(channel: &Channel, url: &str) -> Result<String, BrokerError> {
    let q = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|cause| protocol(url, "declaring a reply queue", cause))?;
    Ok(q.name().as_str().to_string())
}

/// Consumes `queue` without acks: pings and replies are worth nothing once their moment has
/// passed.
pub async fn consume_unacked(
    channel: &Channel,
    url: &str,
    queue: &str,
    context: &str,
) -> Result<lapin::Consumer, BrokerError> {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|cause| protocol(url, context, cause))
}

fn protocol(url: &str, context: &str, cause: lapin::Error) -> BrokerError {
    BrokerError::Protocol {
        url: redact(url),
        context: context.to_string(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(
            super::redact("postgres://postgres@127.0.0.1:5432/cm"),
            "postgres://postgres:***@127.0.0.1:5432/cm"
        );
        assert_eq!(
            super::redact("amqp://u:p%40ss@h1/v;amqp://h2/v;amqp://w:x@h3:5673/v?heartbeat=5"),
            "amqp://u:***@h1/v;amqp://h2/v;amqp://w:***@h3:5673/v?heartbeat=5"
        );
        assert_eq!(
            super::redact("sqlite:///srv/cm/var/cm.db"),
            "sqlite:///srv/cm/var/cm.db"
        );
        assert_eq!(super::redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            super::redact("amqp://u:pa;ss@h/v;amqp://h2"),
            "amqp://u:***@h/v;amqp://h2"
        );
        assert_eq!(
            super::redact("amqp://u:secret@h:99999/v"),
            "amqp://***@h:99999/v"
        );
        assert_eq!(
            super::tuned("amqp://h/%2f"),
            "amqp://h/%2f?heartbeat=10&frame_max=8192"
        );
        assert_eq!(
            super::tuned("amqp://h/?heartbeat=3"),
            "amqp://h/?heartbeat=3&frame_max=8192"
        );
    }
}

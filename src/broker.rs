//! RabbitMQ through lapin: connect (with errors an operator can act on), declare, publish confirmed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    #[error("broker at {url} did not confirm the publish of {id} to queue {queue} ({how})")]
    Nacked {
        url: String,
        queue: String,
        id: String,
        /// "nacked" (after retries) or "returned" (unroutable).
        how: String,
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
                CONNECTED.store(true, Ordering::Relaxed);
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

/// Whether this process's connection to the node reached last is up: set by `connect`,
/// cleared by `lost`. Without it a worker between connections showed the node it would try
/// next as its node (seen in the cluster tests: "another node" 80 ms after its node stopped,
/// before any reconnect).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// The connection to the node reached last was lost: the next connect tries another first.
pub fn lost() {
    CONNECTED.store(false, Ordering::Relaxed);
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

/// The node of the list this process is connected to (redacted), for status lines; `None`
/// while a lost connection is not yet replaced.
pub fn connected_node(urls: &str) -> Option<String> {
    CONNECTED
        .load(Ordering::Relaxed)
        .then(|| current_node(urls))
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
    declare(channel, url, &queue.name, queue_args(queue.quorum)).await
}

fn queue_args(quorum: bool) -> FieldTable {
    let mut args = FieldTable::default();
    if quorum {
        // A short string here makes the broker drop the connection: it must be a long string.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    args
}

/// Declares `<queue>.dead`, cm's own queue of a work queue's dead letters, of the same type: a
/// quorum work queue's dead letters must outlive the loss of a node too. (Classic, it lived on
/// the node that first declared it, and while that node was down no dead letter could be
/// moved: seen in the cluster tests.) A classic `.dead` left from before refuses the quorum
/// declare (`inequivalent arg 'x-queue-type'`): delete it once it is empty.
pub async fn declare_dead_queue(
    channel: &Channel,
    url: &str,
    work_queue: &str,
    quorum: bool,
) -> Result<u32, BrokerError> {
    declare(
        channel,
        url,
        &format!("{work_queue}.dead"),
        queue_args(quorum),
    )
    .await
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

/// Publishes one body to `queue` through the default exchange, mandatory (an unroutable
/// message comes back instead of vanishing).
async fn publish_on(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    channel
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

/// A channel of `conn` in confirm mode.
async fn confirm_channel(conn: &Connection, url: &str) -> Result<Channel, BrokerError> {
    let err = |context: &str| {
        let url = url.to_string();
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
    Ok(channel)
}

/// How long nacked publishes are sent again. A quorum queue nacks while it has no leader: seen
/// after its leader's node was killed, until a surviving node took over (the cluster tests).
/// A nack means the broker did not take the message, so sending it again costs at most a
/// duplicate, which the at-least-once design runs anyway.
pub const NACK_RETRY_FOR: Duration = Duration::from_secs(20);

/// The pauses between sends of nacked messages, up to [`NACK_RETRY_FOR`] in all.
struct Retry {
    deadline: tokio::time::Instant,
    wait: Duration,
}

impl Retry {
    fn new() -> Self {
        Self {
            deadline: tokio::time::Instant::now() + NACK_RETRY_FOR,
            wait: Duration::from_millis(250),
        }
    }

    /// Sleeps before the next send; false once the time is up.
    async fn wait(&mut self, queue: &str, nacked: usize) -> bool {
        if tokio::time::Instant::now() + self.wait > self.deadline {
            return false;
        }
        tracing::warn!(
            "the broker nacked {nacked} message(s) to queue {queue} (a quorum queue between leaders?); sending again in {:?}",
            self.wait
        );
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(2));
        true
    }
}

enum Settled {
    Taken,
    Nacked,
    Returned,
}

/// RabbitMQ's direct reply-to: a client that consumes this pseudo-queue on a channel (no acks)
/// and publishes there with it as `reply_to` gets the replies on that channel, with no queue of
/// its own to declare (the broker fills in an address of the channel for the worker to answer).
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A channel in confirm mode for persistent, confirmed publishing.
pub struct Publisher {
    /// Kept to open a fresh channel after a nack (see [`Publisher::renew`]).
    conn: Arc<Connection>,
    /// Swapped by `renew`; publishes clone it and hold their clone until confirmed, so a swap
    /// never closes a channel under someone's pending confirm (lapin closes a channel when its
    /// last handle goes).
    channel: Mutex<Channel>,
    /// The node published to, redacted.
    url: String,
    origin: String,
    /// The current channel consumes [`DIRECT_REPLY_TO`] ([`Publisher::direct_replies`]); a
    /// renewed one does not, and the broker closes a channel that publishes with it unconsumed.
    direct_replies: AtomicBool,
}

impl Publisher {
    pub async fn open(
        conn: &Arc<Connection>,
        url: &str,
        origin: &str,
    ) -> Result<Self, BrokerError> {
        // The node of the list `conn` reached (`connect` just made it the preferred one), so
        // that an error names the node that refused, not the whole list.
        let url = current_node(url);
        let channel = confirm_channel(conn, &url).await?;
        Ok(Self {
            conn: conn.clone(),
            channel: Mutex::new(channel),
            url,
            origin: origin.to_string(),
            direct_replies: AtomicBool::new(false),
        })
    }

    /// Replies to the messages published from now on with `reply_to` = [`DIRECT_REPLY_TO`].
    /// Should the channel be renewed, messages go without `reply_to` and the consumer ends.
    pub async fn direct_replies(&self) -> Result<lapin::Consumer, BrokerError> {
        let channel = self.channel().await?;
        let consumer =
            consume_unacked(&channel, &self.url, DIRECT_REPLY_TO, "consuming replies").await?;
        self.direct_replies.store(true, Ordering::SeqCst);
        Ok(consumer)
    }

    /// The publishing channel, a fresh one if the broker closed it. A failed declare or publish
    /// closes a channel (seen on a cluster: declaring `QUEUE.dead` while the node it lives on
    /// was down, 404), and a worker's connection, still up, would otherwise publish nothing
    /// more (dead letters, retries, replies) until it is lost.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let current = self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if current.status().connected() {
            return Ok(current);
        }
        tracing::warn!(
            "the publishing channel to {} was closed; opening a new one",
            self.url
        );
        self.renew().await
    }

    /// Closes the publishing channel. One only dropped is closed behind the connection's back,
    /// and a connection closed meanwhile has lapin log the race as a connection error.
    pub async fn close(&self) {
        let current = self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if current.status().connected() {
            let _ = current.close(200, "done".into()).await;
        }
    }

    /// After a nack, publishes go through a new channel. Seen on RabbitMQ 3.10.8 (the cluster
    /// tests): once a quorum queue's leader node was killed, a channel that had published to
    /// it got every later publish to that queue nacked, for the whole 20 s tried, while a new
    /// channel's publishes were confirmed at once by the new leader.
    async fn renew(&self) -> Result<Channel, BrokerError> {
        let fresh = confirm_channel(&self.conn, &self.url).await?;
        self.direct_replies.store(false, Ordering::SeqCst);
        *self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Sends every message to `queue` without waiting for the broker: hand the result to
    /// [`Publisher::confirmed`]. Frames go out while the caller does other work (pipelining).
    pub async fn send_all<'m>(
        &self,
        queue: &str,
        messages: impl IntoIterator<Item = &'m TaskMessage>,
    ) -> Result<Vec<(&'m TaskMessage, lapin::PublisherConfirm)>, BrokerError> {
        self.send_on(&self.channel().await?, queue, messages).await
    }

    async fn send_on<'m>(
        &self,
        channel: &Channel,
        queue: &str,
        messages: impl IntoIterator<Item = &'m TaskMessage>,
    ) -> Result<Vec<(&'m TaskMessage, lapin::PublisherConfirm)>, BrokerError> {
        let messages = messages.into_iter();
        let mut pending = Vec::with_capacity(messages.size_hint().0);
        let replies = self.direct_replies.load(Ordering::SeqCst);
        for msg in messages {
            let (body, props) = if !replies && msg.reply_to.as_deref() == Some(DIRECT_REPLY_TO) {
                TaskMessage {
                    reply_to: None,
                    ..msg.clone()
                }
                .encode(&self.origin)
            } else {
                msg.encode(&self.origin)
            };
            let confirm = publish_on(channel, queue, &body, props)
                .await
                .map_err(|source| self.protocol_error(queue, source))?;
            pending.push((msg, confirm));
        }
        Ok(pending)
    }

    /// Returns once the broker confirmed every message [`Publisher::send_all`] sent. Messages
    /// the broker nacks are sent again for a while (see [`NACK_RETRY_FOR`]).
    pub async fn confirmed(
        &self,
        queue: &str,
        mut pending: Vec<(&TaskMessage, lapin::PublisherConfirm)>,
    ) -> Result<(), BrokerError> {
        let mut retry = Retry::new();
        loop {
            let mut nacked = Vec::new();
            for (msg, confirm) in pending {
                match self.settle(queue, confirm).await? {
                    Settled::Taken => {}
                    Settled::Nacked => nacked.push(msg),
                    Settled::Returned => return Err(self.refused(queue, &msg.id, "returned")),
                }
            }
            let Some(first) = nacked.first() else {
                return Ok(());
            };
            if !retry.wait(queue, nacked.len()).await {
                return Err(self.refused(queue, &first.id, "nacked"));
            }
            let channel = self.renew().await?;
            pending = self.send_on(&channel, queue, nacked).await?;
        }
    }

    /// Publishes one body and waits for its confirm; a nack is sent again on a fresh channel,
    /// as in [`Publisher::confirmed`].
    pub async fn publish_confirmed(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut retry = Retry::new();
        let mut channel = self.channel().await?;
        loop {
            let confirm = publish_on(&channel, queue, body, props.clone())
                .await
                .map_err(|source| self.protocol_error(queue, source))?;
            match self.settle(queue, confirm).await? {
                Settled::Taken => return Ok(()),
                Settled::Returned => return Err(self.refused(queue, "", "returned")),
                Settled::Nacked if retry.wait(queue, 1).await => channel = self.renew().await?,
                Settled::Nacked => return Err(self.refused(queue, "", "nacked")),
            }
        }
    }

    async fn settle(
        &self,
        queue: &str,
        confirm: lapin::PublisherConfirm,
    ) -> Result<Settled, BrokerError> {
        let outcome = confirm
            .await
            .map_err(|source| self.protocol_error(queue, source))?;
        Ok(match outcome {
            lapin::Confirmation::Ack(None) => Settled::Taken,
            lapin::Confirmation::Nack(_) => Settled::Nacked,
            // Unroutable (mandatory), or, never on a confirm channel, not confirmed at all.
            _ => Settled::Returned,
        })
    }

    fn refused(&self, queue: &str, id: &str, how: &str) -> BrokerError {
        BrokerError::Nacked {
            url: self.url.clone(),
            queue: queue.to_string(),
            id: id.to_string(),
            how: how.to_string(),
        }
    }

    fn protocol_error(&self, queue: &str, cause: lapin::Error) -> BrokerError {
        BrokerError::Protocol {
            url: self.url.clone(),
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

/// A protocol error of the broker at `url` (redacted), while doing `context`.
pub fn protocol(url: &str, context: &str, cause: lapin::Error) -> BrokerError {
    BrokerError::Protocol {
        url: redact(url),
        context: context.to_string(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_lite::StreamExt;
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    use super::{Publisher, DIRECT_REPLY_TO};
    use crate::protocol::TaskMessage;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A message published with [`DIRECT_REPLY_TO`] after [`Publisher::direct_replies`] carries
    /// the broker's address of the publisher's channel, and what is sent there is consumed; once
    /// the channel is renewed, such a message goes without `reply_to` (the broker would close
    /// the new channel over it) and is still confirmed.
    #[tokio::test]
    async fn direct_replies_reach_the_publisher_until_its_channel_is_renewed() -> TestResult {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
        let conn = Arc::new(super::connect(url, "cm unit test").await?);
        let queue = format!("cm_unit_replies_{}", std::process::id());
        let other = conn.create_channel().await?;
        // Gone with the connection.
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        other
            .queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await?;
        let publisher = Publisher::open(&conn, url, "cm@test").await?;
        let mut replies = publisher.direct_replies().await?;
        let mut msg = TaskMessage::new("cm.provision", Vec::new(), serde_json::Map::new());
        msg.reply_to = Some(DIRECT_REPLY_TO.into());
        let take = || async {
            let got = other
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await?
                .ok_or("no message on the queue")?;
            Ok::<_, Box<dyn std::error::Error>>(got.properties.reply_to().clone())
        };

        let sent = publisher.send_all(&queue, [&msg]).await?;
        publisher.confirmed(&queue, sent).await?;
        let address = take().await?.ok_or("no reply_to")?.to_string();
        assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
        other
            .basic_publish(
                "".into(),
                address.as_str().into(),
                Default::default(),
                b"answer",
                Default::default(),
            )
            .await?;
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.next())
            .await?
            .ok_or("the replies ended")??;
        assert_eq!(reply.data, b"answer");

        publisher.renew().await?;
        let sent = publisher.send_all(&queue, [&msg]).await?;
        publisher.confirmed(&queue, sent).await?;
        assert_eq!(take().await?, None);
        publisher.close().await;
        conn.close(200, "done".into()).await?;
        Ok(())
    }

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

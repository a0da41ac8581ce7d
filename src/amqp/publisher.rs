//! A channel in confirm mode for persistent, confirmed publishing: send a batch without waiting,
//! then wait for its confirms, sending nacked messages again on a fresh channel for a while.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};

use super::topology::consume_unacked;
use super::BrokerError;
use crate::celery::message::TaskMessage;

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
    /// Unroutable: the broker's reply code and text.
    Returned(u16, String),
}

/// RabbitMQ's direct reply-to: a client that consumes this pseudo-queue on a channel (no acks)
/// and publishes there with it as `reply_to` gets the replies on that channel, with no queue of
/// its own to declare (the broker fills in an address of the channel for the worker to answer).
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A channel in confirm mode for persistent, confirmed publishing: under a client's batches
/// (`client::publish::Publisher`) and a worker's own publishes (re-publishes, dead letters,
/// replies) alike.
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
    /// A publisher on `conn`, which reached `node` (`Brokers::current_node` right after the
    /// connect: an error names the node that refused, not the whole list); `origin` is the
    /// messages' `origin` header.
    pub async fn open(
        conn: &Arc<Connection>,
        node: &str,
        origin: &str,
    ) -> Result<Self, BrokerError> {
        let url = crate::config::urls::redact(node);
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
        let current = self.current();
        if current.status().connected() {
            return Ok(current);
        }
        tracing::warn!(
            "the publishing channel to {} was closed; opening a new one",
            self.url
        );
        self.renew().await
    }

    /// The channel publishes go through now (a clone: see `channel`'s field).
    fn current(&self) -> Channel {
        self.channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Closes the publishing channel. One only dropped is closed behind the connection's back,
    /// and a connection closed meanwhile has lapin log the race as a connection error.
    pub async fn close(&self) {
        let current = self.current();
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
                    Settled::Returned(code, text) => {
                        return Err(self.returned(queue, &msg.id, code, text))
                    }
                }
            }
            let Some(first) = nacked.first() else {
                return Ok(());
            };
            if !retry.wait(queue, nacked.len()).await {
                return Err(self.refused(queue, &first.id));
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
                Settled::Returned(code, text) => return Err(self.returned(queue, "", code, text)),
                Settled::Nacked if retry.wait(queue, 1).await => channel = self.renew().await?,
                Settled::Nacked => return Err(self.refused(queue, "")),
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
            // Unroutable (mandatory): the message comes back with the broker's reason.
            lapin::Confirmation::Ack(Some(back)) => {
                Settled::Returned(back.reply_code, back.reply_text.to_string())
            }
            // Never on a confirm channel: not confirmed at all.
            lapin::Confirmation::NotRequested => Settled::Returned(0, "not confirmed".into()),
        })
    }

    fn refused(&self, queue: &str, id: &str) -> BrokerError {
        BrokerError::Nacked {
            url: self.url.clone(),
            queue: queue.to_string(),
            id: id.to_string(),
        }
    }

    fn returned(&self, queue: &str, id: &str, code: u16, text: String) -> BrokerError {
        BrokerError::Returned {
            url: self.url.clone(),
            queue: queue.to_string(),
            id: id.to_string(),
            code,
            text,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_lite::StreamExt;
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    use super::{Publisher, DIRECT_REPLY_TO};
    use crate::celery::message::TaskMessage;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A message published with [`DIRECT_REPLY_TO`] after [`Publisher::direct_replies`] carries
    /// the broker's address of the publisher's channel, and what is sent there is consumed; once
    /// the channel is renewed, such a message goes without `reply_to` (the broker would close
    /// the new channel over it) and is still confirmed.
    #[tokio::test]
    async fn direct_replies_reach_the_publisher_until_its_channel_is_renewed() -> TestResult {
        let url = crate::amqp::TEST_BROKER_URL;
        let conn = Arc::new(
            crate::amqp::Brokers::new(url)
                .connect("cm unit test")
                .await?,
        );
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
}

//! The worker's pidbox, as kombu's `Node` runs one: its own queue `<node>.celery.pidbox` on the
//! fanout exchange `celery.pidbox`, consumed without acks; each request addressed to this node
//! is answered by [`Remote`] and the reply goes to the request's `reply_to`.

use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::remote::{Answer, Remote};
use crate::celery::control::{self, NotForUs, ReplyTo, Request};

/// Declares `<node>.celery.pidbox` as kombu does (exclusive, auto-delete, expiring) on the
/// fanout exchange, and answers what arrives there until the connection ends.
pub(super) async fn listen(
    remote: &Arc<Remote>,
    conn: &Arc<Connection>,
) -> Result<(), lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            control::EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let queue = control::queue_name(&remote.node);
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(control::QUEUE_EXPIRES_MS),
    );
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(control::QUEUE_MESSAGE_TTL_MS),
    );
    let declare = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), declare, args)
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            control::EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // No acks: a request is worthless once its moment has passed (kombu consumes so too).
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut requests = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            consume,
            FieldTable::default(),
        )
        .await?;
    let me = remote.clone();
    let mut replier = Replier {
        conn: conn.clone(),
        channel: None,
        declared: Vec::new(),
    };
    tokio::spawn(async move {
        // Keeps the channel (and so the consumer) for as long as requests come.
        let _channel = channel;
        while let Some(Ok(delivery)) = requests.next().await {
            me.clock
                .adjust(control::request_clock(&delivery.properties));
            let request = match Request::decode(&delivery.data) {
                Ok(r) => r,
                Err(e) => {
                    debug!("pidbox: ignoring a message that is no request ({e})");
                    continue;
                }
            };
            match request.addressed_to(&me.node) {
                Ok(()) => {}
                Err(NotForUs::Elsewhere) => continue,
                Err(NotForUs::UnknownMatcher(m)) => {
                    debug!(
                        "pidbox: {} for pattern matcher {m:?}, which cm does not have; ignored",
                        request.method
                    );
                    continue;
                }
            }
            debug!("pidbox: {} {:?}", request.method, request.arguments);
            match me.answer(&request).await {
                Answer::Reply(reply) => {
                    if let Some(to) = &request.reply_to {
                        replier
                            .send(&me, to, request.ticket.as_deref(), &reply)
                            .await;
                    }
                }
                Answer::Shutdown => {
                    info!("shutdown asked over remote control (celery control shutdown)");
                    me.stop.request();
                }
            }
        }
    });
    Ok(())
}

/// Sends replies on a channel of its own, so a reply the broker refuses (an exchange that
/// differs from kombu's) closes that channel only; the next reply opens a new one.
struct Replier {
    conn: Arc<Connection>,
    channel: Option<Channel>,
    /// Reply exchanges declared on `channel`, as kombu declares before each reply.
    declared: Vec<String>,
}

impl Replier {
    async fn send(&mut self, remote: &Remote, to: &ReplyTo, ticket: Option<&str>, reply: &Value) {
        let body = control::reply_body(&remote.node, reply);
        let props = control::reply_properties(ticket, remote.clock.forward());
        if let Err(e) = self.publish(to, &body, props).await {
            warn!(
                "pidbox: replying to {}/{}: {e}",
                to.exchange, to.routing_key
            );
            self.channel = None;
        }
    }

    async fn publish(
        &mut self,
        to: &ReplyTo,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), lapin::Error> {
        let channel = match self.channel.take() {
            Some(c) if c.status().connected() => c,
            _ => {
                self.declared.clear();
                self.conn.create_channel().await?
            }
        };
        let channel = self.channel.insert(channel);
        if !to.exchange.is_empty() && !self.declared.contains(&to.exchange) {
            channel
                .exchange_declare(
                    to.exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            self.declared.push(to.exchange.clone());
        }
        channel
            .basic_publish(
                to.exchange.as_str().into(),
                to.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        Ok(())
    }
}

//! The queues cm declares (work queues, their dead letters, private reply queues) and the
//! consumers that need no acks.

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::{protocol, BrokerError};
use crate::config::urls::redact;
use crate::config::QueueConfig;

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

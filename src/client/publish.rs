//! Publishing jobs the one way every front end does it (`cm launch`, `cm provision`, the web
//! launcher): record them PENDING, publish them persistent and confirmed, take the records back
//! if the broker would not have them.

use std::sync::Arc;

use lapin::Connection;

use crate::amqp::{self, BrokerError, Brokers, Publisher};
use crate::celery::message::TaskMessage;
use crate::config::{Config, QueueConfig};
use crate::exit::CmError;
use crate::jobs;
use crate::store::{self, Store};

/// Jobs per store transaction. The first of a big batch are on the queue, and running, while
/// the rest are still being stored.
const CHUNK: usize = 1000;

/// Stores `messages` PENDING under a new batch id, publishes them confirmed to the queue that
/// takes `task`, and returns the batch id. Every job is stored before it is published. A broker
/// failure takes the batch's PENDING records back (the store never shows a job PENDING that was
/// not published); a store failure stops publishing, and the error says how many jobs were
/// stored and published (those run).
pub async fn publish_jobs(
    cfg: &Config,
    brokers: &Brokers,
    store: &Store,
    task: &str,
    messages: &[TaskMessage],
) -> anyhow::Result<String> {
    publish_to(cfg, brokers, store, queue_for(cfg, task)?, messages).await
}

/// The queue that takes `task`: the first whose `tasks` list it.
pub fn queue_for<'a>(cfg: &'a Config, task: &str) -> Result<&'a QueueConfig, CmError> {
    cfg.queue_for_task(task).ok_or_else(|| {
        CmError::BadArgument(format!(
            "no queue takes {task}: add it to the tasks of a [queues.NAME] table in {}",
            cfg.path.display()
        ))
    })
}

/// [`publish_jobs`] to a queue chosen by the caller.
pub async fn publish_to(
    cfg: &Config,
    brokers: &Brokers,
    store: &Store,
    queue: &QueueConfig,
    messages: &[TaskMessage],
) -> anyhow::Result<String> {
    // Connect first: with no broker there is nothing to record.
    let (conn, node) = connect(cfg, brokers).await?;
    let published = publish_on(cfg, &conn, &node, store, queue, messages).await;
    let why = if published.is_ok() {
        "published"
    } else {
        "publish failed"
    };
    let _ = conn.close(200, why.into()).await;
    published
}

/// A publisher's connection to the broker, shared (its publisher opens a new channel on it
/// after a nack, see `amqp::Publisher`).
pub async fn connect(
    cfg: &Config,
    brokers: &Brokers,
) -> Result<(Arc<Connection>, String), BrokerError> {
    let conn = brokers
        .connect(&format!("cm publisher cm@{}", cfg.node_host))
        .await?;
    Ok((Arc::new(conn), brokers.current_node()))
}

/// [`publish_to`] on a connection the caller keeps (and closes): `--wait` hears its jobs'
/// replies on it.
pub async fn publish_on(
    cfg: &Config,
    conn: &Arc<Connection>,
    node: &str,
    store: &Store,
    queue: &QueueConfig,
    messages: &[TaskMessage],
) -> anyhow::Result<String> {
    let publisher = publisher(cfg, conn, node).await?;
    let published = publish_with(cfg, &publisher, store, queue, messages).await;
    publisher.close().await;
    published
}

/// The publisher [`publish_on`] publishes through, for a caller that needs it beyond (replies
/// on its channel, see `results::Replies`): then publish with [`publish_with`].
pub async fn publisher(
    cfg: &Config,
    conn: &Arc<Connection>,
    node: &str,
) -> Result<Publisher, BrokerError> {
    Publisher::open(conn, node, &format!("cm@{}", cfg.node_host)).await
}

/// [`publish_on`] through `publisher`, left open.
pub async fn publish_with(
    cfg: &Config,
    publisher: &Publisher,
    store: &Store,
    queue: &QueueConfig,
    messages: &[TaskMessage],
) -> anyhow::Result<String> {
    // Declared here too: a message to a queue nobody declared yet would be dropped by the broker.
    amqp::declare_work_queue(&publisher.channel().await?, &cfg.broker_url, queue).await?;

    let batch = uuid::Uuid::new_v4().to_string();
    let now = store::now_ms();
    let records = |chunk: &[TaskMessage]| -> Vec<store::NewJob> {
        chunk
            .iter()
            .map(|m| jobs::new_job(m, cfg, &queue.name, Some(batch.clone()), now))
            .collect()
    };
    let chunks: Vec<&[TaskMessage]> = messages.chunks(CHUNK).collect();
    let mut sent = Vec::with_capacity(messages.len());
    let mut outcome = Ok(());
    let mut stored = match chunks.first() {
        Some(first) => store.insert_pending(&records(first)).await,
        None => Ok(()),
    };
    for (k, chunk) in chunks.iter().enumerate() {
        if let Err(e) = stored {
            let published = sent.len();
            if let Err(lost) = publisher.confirmed(&queue.name, sent).await {
                // The broker failed as well: what it holds runs; no record says PENDING for sure.
                take_back(store, &batch).await;
                return Err(
                    anyhow::Error::from(lost).context(format!("after the store failed: {e}"))
                );
            }
            let e = anyhow::Error::from(e);
            return Err(if published == 0 {
                e
            } else {
                e.context(format!(
                    "{published} of {} jobs of batch {batch} were stored and published and will run (`cm jobs`, or db_stats?batch={batch} on the web); the rest were not published",
                    messages.len()
                ))
            });
        }
        // The next chunk is stored while this one is published: the store and the broker work
        // at the same time, and the publisher, which sets the pace, never waits for the store.
        let store_next = async {
            match chunks.get(k + 1) {
                Some(next) => store.insert_pending(&records(next)).await,
                None => Ok(()),
            }
        };
        let (published, next_stored) =
            tokio::join!(publisher.send_all(&queue.name, chunk.iter()), store_next);
        match published {
            Ok(more) => sent.extend(more),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        stored = next_stored;
    }
    if outcome.is_ok() {
        outcome = publisher.confirmed(&queue.name, sent).await;
    }
    if let Err(e) = outcome {
        take_back(store, &batch).await;
        return Err(e.into());
    }
    Ok(batch)
}

/// Deletes the batch's records still PENDING: the broker may not hold those jobs.
async fn take_back(store: &Store, batch: &str) {
    if let Err(undo) = store.delete_unpublished(batch).await {
        tracing::error!("taking back the PENDING records of batch {batch}: {undo}");
    }
}

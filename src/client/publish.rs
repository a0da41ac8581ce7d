//! Publishing jobs the one way every front end does it (`cm launch`, `cm provision`, `cm call`,
//! the web form and `/api/`): a [`Publisher`] records them PENDING, publishes them persistent
//! and confirmed, and takes the records back if the broker would not have them.

use std::sync::Arc;

use lapin::Connection;

use super::results::{Replies, PUSHED_UP_TO};
use crate::amqp::{self, BrokerError, Brokers};
use crate::celery::message::TaskMessage;
use crate::config::{Config, QueueConfig};
use crate::exit::CmError;
use crate::jobs;
use crate::store::{self, Store};

/// How long a command's claim on the outbox rows of the jobs it released holds: should it die
/// before publishing them, a worker takes them after this.
const OUTBOX_CLAIM: std::time::Duration = std::time::Duration::from_secs(30);

/// Jobs per store transaction. The first of a big batch are on the queue, and running, while
/// the rest are still being stored.
const CHUNK: usize = 1000;

/// The queue that takes `task`: the first whose `tasks` list it.
pub fn queue_for<'a>(cfg: &'a Config, task: &str) -> Result<&'a QueueConfig, CmError> {
    cfg.queue_for_task(task).ok_or_else(|| {
        CmError::BadArgument(format!(
            "no queue takes {task}: add it to the tasks of a [queues.NAME] table in {}",
            cfg.path.display()
        ))
    })
}

/// A front end's way to the queues: a connection to the broker and a channel in confirm mode
/// on it, sending batches of jobs. Close it with [`Publisher::close`] once the replies of its
/// batches are no longer listened to.
pub struct Publisher<'c> {
    cfg: &'c Config,
    /// Shared with `channel`, which opens a new channel on it after a nack.
    conn: Arc<Connection>,
    channel: amqp::Publisher,
    /// The node connected to, redacted, for errors.
    node: String,
}

/// A batch published: its id (the jobs' `batch` in the store) and, when the caller waits for a
/// batch of few jobs, the replies telling their final states.
pub struct Batch {
    pub id: String,
    /// On the publisher's channel: they end when it is closed.
    pub replies: Option<Replies>,
    /// The jobs not published because their unique key is held, each with its holder.
    pub duplicates: Vec<store::Duplicate>,
}

/// A batch published by [`once`]: its id and the jobs not published, their key being held.
pub struct Published {
    pub batch: String,
    pub duplicates: Vec<store::Duplicate>,
}

impl Published {
    /// The id a front end shows for job `id` of the batch: the holder's, if it was a duplicate.
    pub fn shown_id<'a>(&'a self, id: &'a str) -> &'a str {
        shown_id(&self.duplicates, id)
    }
}

impl Batch {
    /// As [`Published::shown_id`].
    pub fn shown_id<'a>(&'a self, id: &'a str) -> &'a str {
        shown_id(&self.duplicates, id)
    }
}

fn shown_id<'a>(duplicates: &'a [store::Duplicate], id: &'a str) -> &'a str {
    duplicates
        .iter()
        .find(|d| d.job_id == id)
        .map_or(id, |d| d.holder.as_str())
}

impl<'c> Publisher<'c> {
    /// Connects to a node of `brokers` and opens the confirm channel. Connecting comes first:
    /// with no broker there is nothing to record.
    pub async fn open(cfg: &'c Config, brokers: &Brokers) -> Result<Self, BrokerError> {
        let origin = format!("cm@{}", cfg.node_host);
        let conn = Arc::new(brokers.connect(&format!("cm publisher {origin}")).await?);
        let node = brokers.current_node();
        match amqp::Publisher::open(&conn, &node, &origin).await {
            Ok(channel) => Ok(Self {
                cfg,
                conn,
                channel,
                node,
            }),
            Err(e) => {
                let _ = conn.close(200, "no channel".into()).await;
                Err(e)
            }
        }
    }

    /// Stores `messages` PENDING under a new batch id and publishes them confirmed to `queue`.
    /// Every job is stored before it is published. A broker failure takes the batch's PENDING
    /// records back (the store never shows a job PENDING that was not published); a store
    /// failure stops publishing, and the error says how many jobs were stored and published
    /// (those run). With `waited` (the caller waits for the jobs' final states) a batch of up
    /// to [`PUSHED_UP_TO`] jobs is told them on this publisher's channel ([`Batch::replies`],
    /// their `reply_to`): one such batch per publisher.
    pub async fn send(
        &self,
        store: &Store,
        queue: &QueueConfig,
        messages: &mut [TaskMessage],
        waited: bool,
    ) -> anyhow::Result<Batch> {
        // Consumed before any job is published, so that no reply comes unheard.
        let replies = if waited && messages.len() <= PUSHED_UP_TO {
            let replies = Replies::on(&self.channel).await?;
            for m in messages.iter_mut() {
                m.reply_to = Some(replies.address().to_string());
            }
            Some(replies)
        } else {
            None
        };
        let Published { batch, duplicates } = self.publish(store, queue, messages).await?;
        Ok(Batch {
            id: batch,
            replies,
            duplicates,
        })
    }

    /// Stores `messages` WAITING under a new batch id, each after `parents`, in one
    /// transaction (refused with nothing stored: an unknown parent, a cycle, more than
    /// `[workflows] max_parents`); then publishes at once those the store released already
    /// (their parents had ended as required). The others are published from the store's
    /// outbox by whichever worker's commit releases them. No replies: `--wait` reads the store.
    pub async fn send_after(
        &self,
        store: &Store,
        queue: &QueueConfig,
        messages: &[TaskMessage],
        parents: &store::Parents,
    ) -> anyhow::Result<Batch> {
        // Declared now: the worker that releases them publishes to it, maybe much later.
        amqp::declare_work_queue(&self.channel.channel().await?, &self.node, queue).await?;
        let batch = uuid::Uuid::new_v4().to_string();
        let now = store::now_ms();
        let (records, claims): (Vec<store::NewJob>, Vec<_>) = (messages.iter())
            .map(|m| jobs::new_unique_job(m, self.cfg, &queue.name, Some(batch.clone()), now))
            .unzip();
        let claims: Vec<store::UniqueClaim> = claims.into_iter().flatten().collect();
        let duplicates = store
            .insert_waiting_unique(&records, &claims, parents, self.cfg.max_parents)
            .await?;
        let ids: Vec<String> = (records.into_iter())
            .map(|r| r.id)
            .filter(|id| !duplicates.iter().any(|d| &d.job_id == id))
            .collect();
        self.release(store, &ids).await;
        Ok(Batch {
            id: batch,
            replies: None,
            duplicates,
        })
    }

    /// Stores pairs of jobs under a new batch id in one transaction, each second job WAITING
    /// `--after` its own first (refused with nothing stored: an id the store has), then
    /// publishes the firsts from the outbox at once; each second is published by the worker
    /// whose commit of its first's end releases it. The firsts go to `first_queue`, the
    /// seconds to `then_queue`.
    pub async fn send_pairs(
        &self,
        store: &Store,
        first_queue: &QueueConfig,
        then_queue: &QueueConfig,
        pairs: &[(TaskMessage, TaskMessage)],
    ) -> anyhow::Result<Batch> {
        // Both declared now: a message to a queue nobody declared yet would be dropped.
        let channel = self.channel.channel().await?;
        amqp::declare_work_queue(&channel, &self.node, first_queue).await?;
        amqp::declare_work_queue(&channel, &self.node, then_queue).await?;
        let batch = uuid::Uuid::new_v4().to_string();
        let now = store::now_ms();
        let record = |m: &TaskMessage, queue: &QueueConfig| {
            jobs::new_job(m, self.cfg, &queue.name, Some(batch.clone()), now)
        };
        let records: Vec<(store::NewJob, store::NewJob)> = (pairs.iter())
            .map(|(first, then)| (record(first, first_queue), record(then, then_queue)))
            .collect();
        store.insert_pairs(&records).await?;
        let firsts: Vec<String> = records.into_iter().map(|(f, _)| f.id).collect();
        self.release(store, &firsts).await;
        Ok(Batch {
            id: batch,
            replies: None,
            duplicates: Vec::new(),
        })
    }

    /// Publishes those of `ids` the store released into its outbox (and no one claimed):
    /// at once, not at a worker's next look. Should it fail, a worker publishes them.
    pub async fn release(&self, store: &Store, ids: &[String]) {
        let origin = format!("cm@{}", self.cfg.node_host);
        let drained =
            super::outbox::drain(store, &self.channel, &origin, OUTBOX_CLAIM, Some(ids)).await;
        if let Err(e) = drained {
            tracing::warn!(
                "publishing released jobs: {e}; a worker publishes them from the outbox"
            );
        }
    }

    /// Closes the channel, then the connection.
    pub async fn close(self) {
        self.channel.close().await;
        let _ = self.conn.close(200, "done".into()).await;
    }

    /// [`Publisher::send`] without replies: the batch id, and the jobs not published because
    /// their unique key is held (the store refused them in the transaction of their chunk).
    async fn publish(
        &self,
        store: &Store,
        queue: &QueueConfig,
        messages: &[TaskMessage],
    ) -> anyhow::Result<Published> {
        // Declared here too: a message to a queue nobody declared yet would be dropped by the broker.
        amqp::declare_work_queue(&self.channel.channel().await?, &self.node, queue).await?;

        let batch = uuid::Uuid::new_v4().to_string();
        let now = store::now_ms();
        // A chunk stored: the jobs of a held unique key are not, and are not published.
        let store_chunk = |chunk: &[TaskMessage]| {
            let (records, claims): (Vec<store::NewJob>, Vec<_>) = chunk
                .iter()
                .map(|m| jobs::new_unique_job(m, self.cfg, &queue.name, Some(batch.clone()), now))
                .unzip();
            let claims: Vec<store::UniqueClaim> = claims.into_iter().flatten().collect();
            async move { store.insert_pending_unique(&records, &claims).await }
        };
        let chunks: Vec<&[TaskMessage]> = messages.chunks(CHUNK).collect();
        let mut sent = Vec::with_capacity(messages.len());
        let mut duplicates = Vec::new();
        let mut outcome = Ok(());
        let mut stored = match chunks.first() {
            Some(first) => store_chunk(first).await,
            None => Ok(Vec::new()),
        };
        for (k, chunk) in chunks.iter().enumerate() {
            let held = match stored {
                Ok(held) => held,
                Err(e) => {
                    let published = sent.len();
                    if let Err(lost) = self.channel.confirmed(&queue.name, sent).await {
                        // The broker failed as well: what it holds runs; no record says PENDING for sure.
                        take_back(store, &batch).await;
                        return Err(anyhow::Error::from(lost)
                            .context(format!("after the store failed: {e}")));
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
            };
            // The next chunk is stored while this one is published: the store and the broker work
            // at the same time, and the publisher, which sets the pace, never waits for the store.
            let store_next = async {
                match chunks.get(k + 1) {
                    Some(next) => store_chunk(next).await,
                    None => Ok(Vec::new()),
                }
            };
            // Collected: a filter's closure held across the await is not `Send` for axum.
            let fresh: Vec<&TaskMessage> = if held.is_empty() {
                chunk.iter().collect()
            } else {
                (chunk.iter())
                    .filter(|m| !held.iter().any(|d| d.job_id == m.id))
                    .collect()
            };
            duplicates.extend(held.iter().cloned());
            let (published, next_stored) = tokio::join!(
                self.channel.send_all(&queue.name, fresh.into_iter()),
                store_next
            );
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
            outcome = self.channel.confirmed(&queue.name, sent).await;
        }
        if let Err(e) = outcome {
            take_back(store, &batch).await;
            return Err(e.into());
        }
        Ok(Published { batch, duplicates })
    }
}

/// Deletes the batch's records still PENDING: the broker may not hold those jobs.
async fn take_back(store: &Store, batch: &str) {
    if let Err(undo) = store.delete_unpublished(batch).await {
        tracing::error!("taking back the PENDING records of batch {batch}: {undo}");
    }
}

/// Publishes `messages` to the queue that takes `task` through a [`Publisher`] of its own, and
/// returns the batch: for a front end that does not wait (the web form, `/api/`).
pub async fn once(
    cfg: &Config,
    brokers: &Brokers,
    store: &Store,
    task: &str,
    messages: &[TaskMessage],
) -> anyhow::Result<Published> {
    let queue = queue_for(cfg, task)?;
    let publisher = Publisher::open(cfg, brokers).await?;
    let published = publisher.publish(store, queue, messages).await;
    publisher.close().await;
    published
}

/// Publishes pairs of jobs through a [`Publisher`] of its own ([`Publisher::send_pairs`]: each
/// second job after its own first), to the queues that take `first_task` and `then_task`; the
/// batch id. For the web's "provision these hosts first".
pub async fn pairs(
    cfg: &Config,
    brokers: &Brokers,
    store: &Store,
    (first_task, then_task): (&str, &str),
    pairs: &[(TaskMessage, TaskMessage)],
) -> anyhow::Result<String> {
    let first_queue = queue_for(cfg, first_task)?;
    let then_queue = queue_for(cfg, then_task)?;
    let publisher = Publisher::open(cfg, brokers).await?;
    let published = (publisher.send_pairs(store, first_queue, then_queue, pairs)).await;
    publisher.close().await;
    Ok(published?.id)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lapin::options::QueueDeleteOptions;
    use serde_json::json;

    use super::Publisher;
    use crate::amqp::{Brokers, DIRECT_REPLY_TO, TEST_BROKER_URL};
    use crate::celery::message::TaskMessage;
    use crate::client::results::PUSHED_UP_TO;
    use crate::config::{Config, StoreLocation};
    use crate::store::{JobFilter, Store, PENDING};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn provisions(n: usize) -> Vec<TaskMessage> {
        (0..n)
            .map(|i| {
                let args = vec![json!(format!("h{i}")), json!("image")];
                TaskMessage::new(crate::jobs::PROVISION, args, serde_json::Map::new())
            })
            .collect()
    }

    /// Only a batch of few jobs that is waited for is told its final states (on the
    /// publisher's channel, each message's `reply_to` says so); every batch is in the store
    /// PENDING under its id, and on the queue.
    #[tokio::test]
    async fn a_small_waited_batch_gets_replies_and_every_batch_is_stored_then_queued() -> TestResult
    {
        let queue = format!("cm_unit_publish_{}", std::process::id());
        let text = format!(
            "[broker]\nurl = \"{TEST_BROKER_URL}\"\n[queues.{queue}]\nworkers = [\"w1\"]\ntasks = [\"cm.provision\"]\n"
        );
        let cfg = Config::parse(Path::new("/etc/cm/fabfile.toml"), &text)?;
        let target = super::queue_for(&cfg, crate::jobs::PROVISION)?;
        let store = Store::open(&StoreLocation::SqliteMemory).await?;
        let brokers = Brokers::of(&cfg);
        let cases = [
            (1, true, true),
            (PUSHED_UP_TO, true, true),
            (PUSHED_UP_TO + 1, true, false),
            (1, false, false),
        ];
        for (n, waited, told) in cases {
            let publisher = Publisher::open(&cfg, &brokers).await?;
            let mut messages = provisions(n);
            let batch = publisher
                .send(&store, target, &mut messages, waited)
                .await?;
            publisher.close().await;
            let case = format!("{n} jobs, waited: {waited}");
            assert_eq!(batch.replies.is_some(), told, "{case}");
            let reply_to = told.then_some(DIRECT_REPLY_TO);
            assert!(
                messages.iter().all(|m| m.reply_to.as_deref() == reply_to),
                "{case}"
            );
            let filter = JobFilter {
                batch: Some(batch.id),
                ..JobFilter::default()
            };
            let counts = store.counts_by_state(&filter).await?;
            assert_eq!(counts.len(), 1, "{case}: {counts:?}");
            assert_eq!(counts[0].0, PENDING, "{case}");
            assert_eq!(counts[0].1 as usize, n, "{case}");
        }

        let conn = brokers.connect("cm unit test").await?;
        let channel = conn.create_channel().await?;
        let queued = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        conn.close(200, "done".into()).await?;
        assert_eq!(queued as usize, 2 * PUSHED_UP_TO + 3);
        Ok(())
    }
}

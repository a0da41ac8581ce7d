//! Publishing jobs the one way every front end does it (`cm launch`, `cm provision`, the web
//! launcher): record them PENDING, publish them persistent and confirmed, take the records back
//! if the broker would not have them.

use crate::broker::{self, Publisher};
use crate::config::Config;
use crate::exit::CmError;
use crate::jobs;
use crate::protocol::TaskMessage;
use crate::store::{self, Store};

/// Stores `messages` PENDING under a new batch id, publishes them confirmed to the queue that
/// takes `task`, and returns the batch id. The store never shows a PENDING job that was not
/// published: on a publish failure the batch's records are deleted again.
pub async fn publish_jobs(
    cfg: &Config,
    store: &Store,
    task: &str,
    messages: &[TaskMessage],
) -> anyhow::Result<String> {
    let queue = cfg.queue_for_task(task).ok_or_else(|| {
        CmError::BadArgument(format!(
            "no queue takes {task}: add it to the tasks of a [queues.NAME] table in {}",
            cfg.path.display()
        ))
    })?;
    let origin = format!("cm@{}", cfg.node_host);
    // Connect first: with no broker there is nothing to record.
    let conn = broker::connect(&cfg.broker_url, &format!("cm publisher {origin}")).await?;
    let publisher = Publisher::open(&conn, &cfg.broker_url, &origin).await?;
    // Declared here too: a message to a queue nobody declared yet would be dropped by the broker.
    broker::declare_work_queue(publisher.channel(), &cfg.broker_url, queue).await?;

    let batch = uuid::Uuid::new_v4().to_string();
    let now = store::now_ms();
    let records: Vec<_> = messages
        .iter()
        .map(|m| jobs::new_job(m, &queue.name, Some(batch.clone()), now))
        .collect();
    store.insert_pending(&records).await?;
    if let Err(e) = publisher.publish_all(&queue.name, messages).await {
        if let Err(undo) = store.delete_unpublished(&batch).await {
            tracing::error!("taking back the PENDING records of batch {batch}: {undo}");
        }
        let _ = conn.close(200, "publish failed".into()).await;
        return Err(e.into());
    }
    let _ = conn.close(200, "published".into()).await;
    Ok(batch)
}

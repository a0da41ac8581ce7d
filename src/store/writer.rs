//! Group commit: a worker's events queue up while one transaction is written, then go together.
//!
//! Events are applied in the order sent, so a job's final state is never stored before its steps.
//! `commit` resolves only once its event is durable: the worker acks after that, never before.

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::{apply_batch, Event, StoreError};

/// The most events one transaction takes; bounds the latency a big backlog adds.
const MAX_BATCH: usize = 2000;

struct Item {
    event: Event,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Item>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item").field("event", &self.event).finish()
    }
}

impl Writer {
    pub(super) fn spawn(pool: AnyPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Queues an event without waiting (a step between STARTED and the final state).
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(Item { event, done: None });
    }

    /// Queues an event and waits until it, and everything sent before it, is committed.
    pub async fn commit(&self, event: Event) -> Result<(), StoreError> {
        let (done, stored) = oneshot::channel();
        self.tx
            .send(Item {
                event,
                done: Some(done),
            })
            .map_err(|_| StoreError::WriterGone("channel closed".into()))?;
        match stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::WriterGone(e)),
            Err(_) => Err(StoreError::WriterGone("dropped the event".into())),
        }
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::UnboundedReceiver<Item>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write(&pool, &batch).await.map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!("status store: writing {} event(s) failed: {e}", batch.len());
        }
        for item in batch.drain(..) {
            if let Some(done) = item.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

async fn write(pool: &AnyPool, batch: &[Item]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let events: Vec<&Event> = batch.iter().map(|i| &i.event).collect();
    apply_batch(&mut tx, &events).await?;
    tx.commit().await
}

//! Pause, resume and scale of a queue's workers, whichever front end orders them (`cm queue`,
//! the web's buttons, `/api/queues/Q/...`): checked against the config, kept in the store.
//! And what they show of it: each configured queue's orders, at each scope.

use serde::Serialize;

use crate::config::{Config, QueueConfig};
use crate::exit::CmError;
use crate::store::controls::{desired, Control, ControlRow, Scope};
use crate::store::{Store, StoreError};

/// The configured queue `name`, or the error that names the known ones.
pub fn configured<'c>(cfg: &'c Config, name: &str) -> Result<&'c QueueConfig, CmError> {
    cfg.queues.iter().find(|q| q.name == name).ok_or_else(|| {
        let known: Vec<&str> = cfg.queues.iter().map(|q| q.name.as_str()).collect();
        CmError::BadArgument(format!(
            "no queue {name:?} in {}: known are {}",
            cfg.path.display(),
            known.join(", ")
        ))
    })
}

/// Why an order was not kept.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    UnknownQueue(#[from] CmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keeps `control` for `queue`'s workers at `scope`.
pub async fn queue_order(
    cfg: &Config,
    store: &Store,
    queue: &str,
    scope: &Scope,
    control: Control,
    by: &str,
) -> Result<(), OrderError> {
    configured(cfg, queue)?;
    store.set_control(queue, scope, control, by).await?;
    Ok(())
}

/// What was done, in one line for people.
pub fn describe(queue: &str, scope: &Scope, control: Control) -> String {
    let reach = scope.describe();
    match control {
        Control::Pause { terminate: false } => format!(
            "queue {queue} paused {reach}: its workers take no new jobs within a second, running ones finish, messages stay queued (cm queue resume {queue})"
        ),
        Control::Pause { terminate: true } => format!(
            "queue {queue} paused {reach}: its workers take no new jobs within a second and stop the running ones, which go back to the queue (cm queue resume {queue})"
        ),
        Control::Resume => format!("queue {queue} resumed {reach}: its workers consume again within a second"),
        Control::Scale(n) => format!(
            "queue {queue} scaled to {n} job(s) at once per worker {reach}, within a second (a smaller size waits for running jobs to end)"
        ),
    }
}

/// One configured queue's state, as the web and `/api/queues` show it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub queue: String,
    /// What every host is told (the `''` row, then the config).
    pub paused: bool,
    pub concurrency: u16,
    pub configured_concurrency: u16,
    /// Every stored row of the queue, narrower ones included (`--host`, a worker's pidbox order).
    pub orders: Vec<ControlRow>,
}

/// Every configured queue with its orders.
pub async fn overview(cfg: &Config, store: &Store) -> Result<Vec<QueueView>, StoreError> {
    let rows = store.controls(None).await?;
    Ok(cfg
        .queues
        .iter()
        .map(|q| {
            let orders: Vec<ControlRow> =
                rows.iter().filter(|r| r.queue == q.name).cloned().collect();
            // No host or node is named '', so this is what every host is told.
            let everywhere = desired(&orders, "", "");
            QueueView {
                queue: q.name.clone(),
                paused: everywhere.paused,
                concurrency: everywhere.concurrency.unwrap_or(q.concurrency),
                configured_concurrency: q.concurrency,
                orders,
            }
        })
        .collect())
}

//! The SQLite backend, on rusqlite: a file in WAL mode (or an in-memory database for tests).
//!
//! Its files, by topic, are named as `postgres/`'s are, so a new query touches the same-named
//! file in both:
//! - [`jobs`]: publish, look up, list, history, reset.
//! - [`counts`]: counts by filter, the kept counts and their fold, the run-time histogram.
//! - [`revokes`]: revoking jobs, and the revokes workers poll.
//! - [`leases`]: a long job's lease renewed, lapsed, claimed, and its job requeued.
//! - [`schedule`]: jobs held until their eta, and claimed when due.
//! - [`workflow`]: jobs waiting on others, the outbox, retries, a workflow's edges.
//! - [`columns`]: the `jobs` columns as rusqlite binds, reads and filters them.
//! - [`commit`]: a worker's group commits, on a connection of its own.
//! - [`error`]: what rusqlite's errors mean to a caller.
//! - [`pool`]: the pooled connections that reads and the writes of commands run on, off the
//!   async runtime.
//! - [`migrate`]: opening a file, and its schema.
//! - [`checkpoint`]: a worker's WAL checkpoints, on a thread of their own.

mod canvas;
mod checkpoint;
mod columns;
mod commit;
mod controls;
mod counts;
mod error;
mod firings;
mod flow;
mod jobs;
mod leases;
mod migrate;
mod pool;
mod prune;
mod rates;
mod revokes;
mod schedule;
mod unique;
mod workflow;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;
pub(super) use commit::CommitWriter;
use error::FIX;
use error::{error, is_busy};
use pool::Pool;

/// Connections for the reads of a command or the web server (a worker's are rare: one per
/// redelivery).
const READERS: usize = 4;
const WORKER_READERS: usize = 1;

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: Pool,
    /// The database file; `None` in memory, where the writer shares the pool's connection.
    file: Option<(PathBuf, Duration)>,
}

/// What every connection to a store file sets: how long it waits for a lock, and NORMAL
/// durability, which survives a process crash (what a worker's ack after a commit relies on).
/// Recursive triggers: the release trigger's revoke of a child releases that child's own
/// children (migration 0011_workflows).
fn settings(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "recursive_triggers", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")
}

impl Store {
    /// Opens the file at `path`, creating it and its folder on first use, and migrates it.
    pub(crate) async fn open_file(
        path: &Path,
        busy: Duration,
        for_worker: bool,
    ) -> Result<Self, StoreError> {
        let name: Arc<str> = format!("sqlite://{}", path.display()).into();
        let (file, store) = (path.to_path_buf(), name.clone());
        let first = tokio::task::spawn_blocking(move || migrate::open(&file, busy, &store))
            .await
            .map_err(|e| StoreError::Unreachable {
                store: name.to_string(),
                cause: format!("opening did not finish: {e}"),
                fix: FIX,
            })??;
        let size = if for_worker { WORKER_READERS } else { READERS };
        Ok(Self {
            pool: Pool::file(name, first, path.to_path_buf(), busy, size),
            file: Some((path.to_path_buf(), busy)),
        })
    }

    /// A new, migrated in-memory database: it lives as long as this store (and its clones).
    pub(crate) async fn open_memory() -> Result<Self, StoreError> {
        let name: Arc<str> = "sqlite::memory:".into();
        let unreachable = |e: rusqlite::Error| StoreError::Unreachable {
            store: name.to_string(),
            cause: e.to_string(),
            fix: FIX,
        };
        let mut conn = Connection::open_in_memory().map_err(unreachable)?;
        conn.pragma_update(None, "recursive_triggers", "ON")
            .map_err(unreachable)?;
        migrate::run(&mut conn).map_err(|cause| StoreError::Migration {
            store: name.to_string(),
            cause,
        })?;
        Ok(Self {
            pool: Pool::memory(name, conn),
            file: None,
        })
    }

    /// The worker's group-commit writer: on a file, a connection of its own.
    pub(crate) fn commit_writer(&self) -> Result<CommitWriter, StoreError> {
        match &self.file {
            Some((path, busy)) => CommitWriter::own(path, *busy, self.pool.name().clone()),
            None => Ok(CommitWriter::shared(self.pool.clone())),
        }
    }

    pub(crate) async fn close(&self) {
        self.pool.close();
    }
}

#[cfg(test)]
mod tests;

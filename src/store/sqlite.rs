//! The worker writer's own connection to an SQLite store (rusqlite), used on the worker's
//! runtime thread.
//!
//! Why not sqlx here: sqlx runs each SQLite connection on a thread of its own and sends it every
//! statement (BEGIN, each INSERT, COMMIT) over a channel, so one group commit woke two threads
//! several times over. Under `cm launch` load, context switches were the largest single item in
//! a worker's perf profile on a 2-core machine; inline, the runtime thread switches 0.3 times per
//! job instead of 0.9, and that thread is gone. A transaction takes a few hundred microseconds of
//! CPU at most: short enough to run inline without holding up the worker's jobs.
//!
//! Blocking inline also means the connection must never sleep in SQLite's busy handler while
//! another worker holds the write lock: its busy timeout is 0, and a busy database is retried
//! after an async sleep, until the store's busy timeout has passed.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, TransactionBehavior};

use super::plan::{Arg, Statement};

/// Enough for every statement text a batch uses (6 single-row ones, and one per recurring size
/// of the multi-row ones, see `params::chunks`), so none is parsed twice.
const PREPARED_STATEMENTS: usize = 64;

/// How long to wait before trying a busy database again.
const BUSY_RETRY: Duration = Duration::from_millis(1);

pub(crate) struct Connection {
    conn: rusqlite::Connection,
    /// How long a write may wait for another writer's lock before it fails.
    busy: Duration,
}

impl Connection {
    /// Opens the (already created and migrated) store file.
    pub(crate) fn open(path: &Path, busy: Duration) -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::ZERO)?;
        // Durable across a process crash, which is what the ack after a commit relies on (the
        // sqlx pool sets the same; journal_mode = WAL is the file's, set there).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
        Ok(Self { conn, busy })
    }

    /// Runs `statements` in one transaction; waits (async) while another writer holds the lock.
    pub(crate) async fn write(&mut self, statements: &[Statement<'_>]) -> rusqlite::Result<()> {
        let deadline = Instant::now() + self.busy;
        loop {
            match self.try_write(statements) {
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                other => return other,
            }
        }
    }

    fn try_write(&mut self, statements: &[Statement<'_>]) -> rusqlite::Result<()> {
        // IMMEDIATE takes the write lock first, so a busy database fails here, before any work.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for st in statements {
            tx.prepare_cached(&st.sql)?
                .execute(rusqlite::params_from_iter(&st.args))?;
        }
        tx.commit()
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Text(s) => ValueRef::Text(s.as_bytes()),
            Arg::Int(n) => ValueRef::Integer(*n),
            Arg::Null => ValueRef::Null,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Event, NewJob, Store, StoreError, RECEIVED};

    /// A writer waits for another connection's write lock (async), then commits; it fails only
    /// when the lock outlasts its busy timeout.
    #[tokio::test]
    async fn a_locked_store_is_waited_for_then_written_or_given_up_on() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
        let path = dir.path().join("s.db");
        let store = Store::open(&crate::config::StoreLocation::SqliteFile(path.clone())).await?;
        let ev = Event::Received {
            job: NewJob {
                id: "a".into(),
                ..NewJob::default()
            },
            worker: "w".into(),
            at: 1,
        };
        let statements = super::super::plan::batch(&[&ev], true);

        let holder = rusqlite::Connection::open(&path).map_err(StoreError::Sqlite)?;
        holder
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::Sqlite)?;
        let mut impatient =
            Connection::open(&path, Duration::from_millis(30)).map_err(StoreError::Sqlite)?;
        let Err(e) = impatient.write(&statements).await else {
            panic!("wrote while another connection held the write lock");
        };
        assert!(is_busy(&e), "{e}");

        let mut patient =
            Connection::open(&path, Duration::from_secs(10)).map_err(StoreError::Sqlite)?;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            holder.execute_batch("COMMIT")
        });
        patient
            .write(&statements)
            .await
            .map_err(StoreError::Sqlite)?;
        release
            .await
            .map_err(|e| StoreError::WriterGone(e.to_string()))?
            .map_err(StoreError::Sqlite)?;
        let row = store.get("a").await?;
        assert_eq!(row.map(|r| r.state), Some(RECEIVED.to_string()));
        Ok(())
    }
}

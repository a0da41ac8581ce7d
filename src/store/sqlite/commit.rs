//! A worker's group commits on SQLite: the statements that write a [`Commit`], and the writer's
//! own connection, used inline on the worker's runtime thread.
//!
//! Why inline and not on a pool thread: handing each transaction to another thread woke two
//! threads several times per commit, and under `cm launch` load context switches were the
//! largest single item in a worker's profile on a 2-core machine. A transaction takes a few
//! hundred microseconds of CPU at most: short enough to run inline without holding up the
//! worker's jobs.
//!
//! Blocking inline also means the connection must never sleep in SQLite's busy handler while
//! another worker holds the write lock: its busy timeout is 0, and a busy database is retried
//! after an async sleep, until the store's busy timeout has passed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use super::canvas;
use super::checkpoint::Checkpointer;
use super::columns::Binder;
use super::counts::fold_counts_if_long;
use super::pool::Pool;
use super::{error, is_busy, settings};
use crate::store::batch::{self, Commit, FoldedHistory, WholeRun};
use crate::store::{is_final_sql, live_row, Event, NewJob, StoreError, STARTED};

/// Enough for every statement text a commit uses (6 single-row ones, the 6 of a fold, and one per recurring size
/// of the multi-row ones, see [`batch::chunks`]), so none is parsed twice.
const PREPARED_STATEMENTS: usize = 64;

/// How long to wait before trying a busy database again.
const BUSY_RETRY: Duration = Duration::from_millis(1);

/// Rows per multi-row statement (powers of two, see [`batch::chunks`]), well under SQLite's
/// limit of 32766 parameters: 6, 10 and 16 parameters a row.
const HISTORY_ROWS_PER_INSERT: usize = 256;
const PENDING_ROWS_PER_INSERT: usize = 128;
const RUNS_PER_UPSERT: usize = 64;

pub(crate) enum CommitWriter {
    /// A store file: the writer's own connection, run inline.
    Own {
        conn: Connection,
        /// How long a commit may wait for another writer's lock before it fails.
        busy: Duration,
        name: Arc<str>,
        /// Checkpoints the WAL off this connection; `None` leaves them to SQLite's own.
        checkpoints: Option<Checkpointer>,
    },
    /// An in-memory database: the store's one connection, which no other process can lock.
    Shared(Pool),
}

impl CommitWriter {
    /// Opens a connection of its own to the (already created and migrated) store file.
    pub(super) fn own(path: &Path, busy: Duration, name: Arc<str>) -> Result<Self, StoreError> {
        let unreachable = |e: rusqlite::Error| StoreError::Unreachable {
            store: name.to_string(),
            cause: format!("opening the worker's write connection: {e}"),
            fix: super::FIX,
        };
        let conn = Connection::open(path).map_err(unreachable)?;
        settings(&conn, Duration::ZERO).map_err(unreachable)?;
        conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
        let checkpoints = Checkpointer::start(path, &name);
        if checkpoints.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(unreachable)?;
        }
        Ok(Self::Own {
            conn,
            busy,
            name,
            checkpoints,
        })
    }

    pub(super) fn shared(pool: Pool) -> Self {
        Self::Shared(pool)
    }

    /// Writes `commit` in one transaction; waits (async) while another writer holds the lock.
    pub(crate) async fn write(&mut self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let (conn, busy, name, checkpoints) = match self {
            Self::Own {
                conn,
                busy,
                name,
                checkpoints,
            } => (conn, *busy, name, checkpoints),
            Self::Shared(pool) => return pool.run_here(|conn| write(conn, commit)).await,
        };
        let deadline = Instant::now() + busy;
        loop {
            match write(conn, commit) {
                Ok(()) => {
                    if let Some(checkpoints) = checkpoints {
                        checkpoints.committed();
                    }
                    return Ok(());
                }
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(e) if is_busy(&e) => {
                    return Err(StoreError::Busy {
                        store: name.to_string(),
                        cause: format!(
                            "another connection held the write lock for over {} ms",
                            busy.as_millis()
                        ),
                    })
                }
                Err(e) => return Err(error(name, e)),
            }
        }
    }
}

/// `commit` in one transaction. IMMEDIATE takes the write lock first, so a busy database fails
/// here, before any work.
pub(super) fn write(conn: &mut Connection, commit: &Commit<'_>) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for ev in &commit.updates {
        update(&tx, ev)?;
    }
    upsert_whole_runs(&tx, &commit.whole_runs)?;
    for job in &commit.options {
        canvas::keep_options(&tx, job)?;
    }
    for spawn in &commit.spawns {
        canvas::insert_spawned(&tx, spawn)?;
    }
    insert_history(&tx, &commit.history)?;
    fold_counts_if_long(&tx)?;
    tx.commit()
}

/// Applies one event to its job's `jobs` row (its history is written apart). A final row is
/// left as it is (the first final state wins), its `deliveries` too: another run shows in the
/// history alone.
fn update(conn: &Connection, ev: &Event) -> rusqlite::Result<usize> {
    match ev {
        // A delivery starts with no lease: an older run's, or a reaper's claim, is over.
        Event::Received { job, worker, at } => {
            let mut st = conn.prepare_cached(concat!(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
                 worker, submitted_ms, deliveries) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'RECEIVED', ?9, ?10, 1) \
                 ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                 state = 'RECEIVED', worker = excluded.worker, lease_owner = NULL, \
                 lease_until = NULL",
                live_row!()
            ))?;
            Binder::new(&mut st)
                .job(job)?
                .bind(&**worker)?
                .bind(at)?
                .execute()
        }
        Event::State {
            id,
            state,
            worker,
            at,
        } if state == STARTED => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = ?1, worker = ?2, started_ms = ?3 \
                 WHERE id = ?4 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![&**state, &**worker, at, &**id]),
        Event::State { id, state, .. } => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = ?1 WHERE id = ?2 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![&**state, &**id]),
        Event::Finished {
            id,
            state,
            worker,
            at,
            result,
            error,
            output,
            ..
        } => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = ?1, worker = ?2, finished_ms = ?3, result = ?4, \
                 error = ?5, output = ?6, lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?7 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![state, &**worker, at, result, error, output, &**id]),
        Event::Retry {
            id, error, retries, ..
        } => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = 'RETRY', error = ?1, retries = ?2, lease_owner = NULL, \
                 lease_until = NULL WHERE id = ?3 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![error, retries, &**id]),
        Event::Redelivered { id, .. } => conn
            .prepare_cached("UPDATE jobs SET deliveries = deliveries + 1 WHERE id = ?1")?
            .execute([&**id]),
        // Only the giver's own hold ends: another worker may have received it meanwhile.
        Event::GivenBack { id, worker, .. } => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = 'PENDING' WHERE id = ?1 AND worker = ?2 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![&**id, &**worker]),
        Event::Leased {
            id, worker, until, ..
        } => conn
            .prepare_cached(concat!(
                "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 WHERE id = ?3 AND NOT ",
                is_final_sql!("state")
            ))?
            .execute(params![&**worker, until, &**id]),
    }
}

fn upsert_whole_runs(conn: &Connection, runs: &[WholeRun<'_>]) -> rusqlite::Result<()> {
    multi_row(
        conn,
        runs,
        RUNS_PER_UPSERT,
        MultiRow {
            head: "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
                   worker, submitted_ms, started_ms, finished_ms, result, error, output, \
                   deliveries) VALUES ",
            row: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            // lease_* are NULL in `excluded`: a finished run holds no lease.
            tail: concat!(
                " ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
             state = excluded.state, worker = excluded.worker, started_ms = excluded.started_ms, \
             finished_ms = excluded.finished_ms, result = excluded.result, \
             error = excluded.error, output = excluded.output, lease_owner = NULL, \
             lease_until = NULL",
                live_row!()
            ),
        },
        |b, r| {
            b.job(r.job)?
                .bind(r.state)?
                .bind(r.worker)?
                .bind(r.received_ms)?
                .bind(r.started_ms)?
                .bind(r.finished_ms)?
                .bind(r.result)?
                .bind(r.error)?
                .bind(r.output)?;
            Ok(())
        },
    )
}

/// The folded history rows of a commit (see [`FoldedHistory`]).
pub(super) fn insert_history(
    conn: &Connection,
    rows: &[FoldedHistory<'_>],
) -> rusqlite::Result<()> {
    multi_row(
        conn,
        rows,
        HISTORY_ROWS_PER_INSERT,
        MultiRow {
            head: "INSERT INTO job_events (job_id, state, worker, at_ms, detail, later) VALUES ",
            row: "(?, ?, ?, ?, ?, ?)",
            tail: "",
        },
        |b, h| {
            b.bind(h.job_id)?
                .bind(h.state)?
                .bind(h.worker)?
                .bind(h.at_ms)?
                .bind(h.detail.as_deref())?
                .bind(h.later.as_deref())?;
            Ok(())
        },
    )
}

/// The `jobs` rows of published jobs, PENDING (a row already there is left alone).
pub(super) fn insert_pending(conn: &Connection, jobs: &[NewJob]) -> rusqlite::Result<()> {
    insert_new(conn, jobs, "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?)")
}

/// The `jobs` rows of jobs published after others, WAITING (a row already there is left
/// alone: the caller checked there is none).
pub(super) fn insert_waiting(conn: &Connection, jobs: &[NewJob]) -> rusqlite::Result<()> {
    insert_new(conn, jobs, "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'WAITING', ?)")
}

fn insert_new(conn: &Connection, jobs: &[NewJob], row: &'static str) -> rusqlite::Result<()> {
    multi_row(
        conn,
        jobs,
        PENDING_ROWS_PER_INSERT,
        MultiRow {
            head: "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, \
                   state, submitted_ms) VALUES ",
            row,
            tail: " ON CONFLICT (id) DO NOTHING",
        },
        |b, job| {
            b.job(job)?
                .bind(job.batch.as_deref())?
                .bind(job.submitted_ms)?;
            Ok(())
        },
    )?;
    for job in jobs.iter().filter(|job| !job.options.is_plain()) {
        canvas::keep_options(conn, job)?;
    }
    Ok(())
}

/// One multi-row statement: `head`, then `row` once per row, comma-separated, then `tail`.
/// Anonymous `?` placeholders, bound by position: cheap to bind, where a named one would be
/// looked up by name in a list of them all.
struct MultiRow {
    head: &'static str,
    row: &'static str,
    tail: &'static str,
}

impl MultiRow {
    fn sql(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.head.len() + rows * (self.row.len() + 2) + self.tail.len());
        sql.push_str(self.head);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(self.row);
        }
        sql.push_str(self.tail);
        sql
    }
}

/// Writes `rows` in statements of recurring sizes (see [`batch::chunks`]); `bind` binds one
/// row's values in the order of the statement's placeholders.
fn multi_row<T>(
    conn: &Connection,
    rows: &[T],
    max: usize,
    statement: MultiRow,
    bind: impl Fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    for chunk in batch::chunks(rows, max) {
        let mut st = conn.prepare_cached(&statement.sql(chunk.len()))?;
        let mut binder = Binder::new(&mut st);
        for row in chunk {
            bind(&mut binder, row)?;
        }
        st.raw_execute()?;
    }
    Ok(())
}

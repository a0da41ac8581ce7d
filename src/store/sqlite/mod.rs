//! The SQLite backend, on rusqlite: a file in WAL mode (or an in-memory database for tests).
//!
//! Reads, and the writes of commands and the web server, run on a few pooled connections off
//! the async runtime ([`pool`]); a worker's group commits go through a connection of its own
//! ([`commit`]). The schema is [`migrate`]d on open.
//!
//! Longer than our usual ~400 lines on purpose: it is every query of this backend, one short
//! method per `Store` call, in the order of `store/mod.rs`, so that it reads side by side with
//! `postgres/mod.rs`. Splitting it by topic would scatter that mirror.

mod checkpoint;
mod commit;
mod migrate;
mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::batch::{self, FoldedHistory};
use super::{
    is_final_sql, live_row, DurationHistogram, EventRow, JobFilter, JobRow, MessageOptions, NewJob,
    Revoke, Revoked, StoreError, REVOKED,
};
pub(super) use commit::CommitWriter;
use pool::Pool;

/// The `jobs` columns in [`JobRow`]'s order (a macro, so that statements can `concat!` it).
macro_rules! job_columns {
    () => {
        "id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, \
         submitted_ms, started_ms, finished_ms, result, error, deliveries, retries, output, \
         lease_owner, lease_until, eta_ms, expires_ms, time_limit_ms, soft_time_limit_ms, \
         reply_to"
    };
}

/// What to check when an SQLite store cannot be opened.
const FIX: &str = "check that the file and its folder are writable, or fix [store] url";

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

/// A busy database is one another connection holds locked past this one's busy timeout.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(super) fn error(store: &str, e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::Busy {
            store: store.to_string(),
            cause: e.to_string(),
        }
    } else if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
        // SQLite's unix VFS reports ENOSPC on the file or its WAL as SQLITE_FULL.
        StoreError::Full {
            store: store.to_string(),
            cause: e.to_string(),
        }
    } else {
        StoreError::Backend {
            store: store.to_string(),
            cause: e.to_string(),
        }
    }
}

/// What every connection to a store file sets: how long it waits for a lock, and NORMAL
/// durability, which survives a process crash (what a worker's ack after a commit relies on).
fn settings(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
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

    pub(crate) async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let jobs = jobs.to_vec();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                commit::insert_pending(&tx, &jobs)?;
                commit::insert_history(&tx, &batch::published(&jobs))?;
                commit::fold_counts_if_long(&tx)?;
                tx.commit()
            })
            .await
    }

    pub(crate) async fn delete_unpublished(&self, batch: &str) -> Result<u64, StoreError> {
        let batch = batch.to_string();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "DELETE FROM job_events WHERE job_id IN \
                     (SELECT id FROM jobs WHERE batch = ?1 AND state = 'PENDING')",
                    [&batch],
                )?;
                let removed = tx.execute(
                    "DELETE FROM jobs WHERE batch = ?1 AND state = 'PENDING'",
                    [&batch],
                )?;
                tx.commit()?;
                Ok(removed as u64)
            })
            .await
    }

    pub(crate) async fn state_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.pool
            .run(move |conn| {
                conn.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
                    .query_row([&id], |r| r.get(0))
                    .optional()
            })
            .await
    }

    /// Up to `limit` ids that begin or end with `part`, in order.
    pub(crate) async fn ids_around(
        &self,
        part: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let part = part.to_string();
        self.pool
            .run(move |conn| {
                let n = part.chars().count() as i64;
                let mut st = conn.prepare_cached(
                    "SELECT id FROM jobs WHERE substr(id, 1, ?2) = ?1 OR substr(id, -?2) = ?1 \
                     ORDER BY id LIMIT ?3",
                )?;
                let ids = st.query_map(rusqlite::params![part, n, limit], |r| r.get(0))?;
                ids.collect()
            })
            .await
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let id = id.to_string();
        self.pool
            .run(move |conn| {
                conn.prepare_cached(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE id = ?1"
                ))?
                .query_row([&id], job_row)
                .optional()
            })
            .await
    }

    pub(crate) async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        let job = id.to_string();
        let rows = self
            .pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT state, worker, at_ms, detail, later FROM job_events \
                     WHERE job_id = ?1 ORDER BY seq",
                )?;
                let rows = st.query_map([&job], |r| {
                    let first = EventRow {
                        state: r.get(0)?,
                        worker: r.get(1)?,
                        at_ms: r.get(2)?,
                        detail: r.get(3)?,
                    };
                    Ok((first, r.get::<_, Option<String>>(4)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (first, later) in rows {
            batch::unfold(id, first, later.as_deref(), &mut out)?;
        }
        Ok(out)
    }

    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let (clause, mut binds) = where_clause(filter);
        let limit = if filter.limit > 0 { filter.limit } else { -1 };
        binds.extend([limit.into(), filter.offset.into()]);
        let sql = format!(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs{} ORDER BY submitted_ms DESC, id LIMIT ? OFFSET ?"
            ),
            clause
        );
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(&sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(&binds), job_row)?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM jobs{clause}");
        self.pool
            .run(move |conn| {
                conn.prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&binds), |r| r.get(0))
            })
            .await
    }

    pub(crate) async fn counts_by_state(
        &self,
        filter: &JobFilter,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT state, COUNT(*) FROM jobs{clause} GROUP BY state ORDER BY state");
        self.pool.run(move |conn| pairs(conn, &sql, &binds)).await
    }

    /// Runs `read` of the kept counts (see migration 0006), first folding the changes waiting
    /// when they are many: cm's writers fold as they write, but rows written by anything else (a
    /// bulk INSERT, an older cm) would otherwise be added up again by every read until the next
    /// commit. A fold that cannot have the write lock in time is left to later: the views are
    /// right either way.
    async fn read_counts<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.pool
            .run(move |conn| {
                if commit::changes_waiting(conn)? >= commit::FOLD_AT {
                    let fold = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .and_then(|tx| {
                            commit::fold_counts_if_long(&tx)?;
                            tx.commit()
                        });
                    match fold {
                        Err(e) if is_busy(&e) => {
                            tracing::debug!("kept counts not folded, the store is busy: {e}")
                        }
                        other => other?,
                    }
                }
                read(conn)
            })
            .await
    }

    /// The kept counts, of `state` alone or of every state.
    pub(crate) async fn kept_count(&self, state: Option<&str>) -> Result<i64, StoreError> {
        let state = state.map(str::to_string);
        self.read_counts(move |conn| {
            conn.prepare_cached(
                "SELECT COALESCE(SUM(n), 0) FROM job_state_totals WHERE ?1 IS NULL OR state = ?1",
            )?
            .query_row([&state], |r| r.get(0))
        })
        .await
    }

    pub(crate) async fn kept_counts_by_state(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let state: rusqlite::types::Value = state.map(str::to_string).into();
        self.read_counts(move |conn| {
            pairs(
                conn,
                "SELECT state, n FROM job_state_totals \
                 WHERE n > 0 AND (?1 IS NULL OR state = ?1) ORDER BY state",
                &[state],
            )
        })
        .await
    }

    pub(crate) async fn counts_by_worker(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read_counts(|conn| {
            pairs(
                conn,
                "SELECT worker, n FROM job_worker_totals WHERE n > 0 ORDER BY worker",
                &[],
            )
        })
        .await
    }

    /// (clock minute, jobs finished in it) from minute `first` on, for the minutes that have any.
    pub(crate) async fn finished_per_minute(
        &self,
        first: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read_counts(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT minute, n FROM job_finished_minute_totals WHERE minute >= ?1 AND n > 0",
            )?;
            let rows = st.query_map([first], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    pub(crate) async fn duration_histogram(
        &self,
        bounds_ms: &[i64],
    ) -> Result<DurationHistogram, StoreError> {
        let buckets: String = (1..=bounds_ms.len())
            .map(|i| format!(", COUNT(*) FILTER (WHERE finished_ms - started_ms <= ?{i})"))
            .collect();
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(finished_ms - started_ms), 0){buckets} FROM jobs \
             WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL"
        );
        let bounds = bounds_ms.to_vec();
        self.pool
            .run(move |conn| {
                conn.prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&bounds), |r| {
                        let at_most = (0..bounds.len())
                            .map(|i| Ok((bounds[i], r.get(i + 2)?)))
                            .collect::<rusqlite::Result<_>>()?;
                        Ok(DurationHistogram {
                            at_most,
                            count: r.get(0)?,
                            sum_ms: r.get(1)?,
                        })
                    })
            })
            .await
    }

    pub(crate) async fn revoke(
        &self,
        ids: &[String],
        terminate: bool,
        signal: Option<&str>,
        by: &str,
        now: i64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let (ids, signal, by) = (ids.to_vec(), signal.map(str::to_string), by.to_string());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let why = format!("revoked by {by}");
                let mut answers = Vec::with_capacity(ids.len());
                let mut ended = Vec::new();
                {
                    // A repeat without terminate changes nothing; one with it upgrades the
                    // revoke and moves it past its old time, so that pollers see it again.
                    let mut keep = tx.prepare_cached(
                        "INSERT INTO revokes (id, at_ms, terminate, signal, by) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (id) DO UPDATE SET \
                         at_ms = MAX(excluded.at_ms, revokes.at_ms + 1), terminate = 1, \
                         signal = excluded.signal, by = excluded.by WHERE excluded.terminate",
                    )?;
                    // Not yet (or no longer) any worker's: it ends here.
                    let mut end = tx.prepare_cached(
                        "UPDATE jobs SET state = 'REVOKED', finished_ms = ?1, error = ?2, \
                         lease_owner = NULL, lease_until = NULL \
                         WHERE id = ?3 AND (state = 'PENDING' OR state = 'RETRY' OR state = 'SCHEDULED')",
                    )?;
                    let mut state_of = tx.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?;
                    for id in &ids {
                        keep.execute(params![id, now, terminate, signal, by])?;
                        if end.execute(params![now, why, id])? > 0 {
                            ended.push(id);
                        }
                        let state = state_of.query_row([id], |r| r.get(0)).optional()?;
                        answers.push(Revoked {
                            id: id.clone(),
                            state,
                        });
                    }
                }
                let history: Vec<FoldedHistory<'_>> = ended
                    .iter()
                    .map(|id| FoldedHistory {
                        job_id: id,
                        state: REVOKED,
                        worker: &by,
                        at_ms: now,
                        detail: Some(why.as_str().into()),
                        later: None,
                    })
                    .collect();
                commit::insert_history(&tx, &history)?;
                commit::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(answers)
            })
            .await
    }

    pub(crate) async fn revokes_since(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<Revoke>, StoreError> {
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT * FROM (SELECT id, at_ms, terminate, signal, by FROM revokes \
                     WHERE at_ms > ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2) ORDER BY at_ms, id",
                )?;
                let rows = st.query_map(params![after_ms, limit], |r| {
                    Ok(Revoke {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        terminate: r.get(2)?,
                        signal: r.get(3)?,
                        by: r.get(4)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let (owner, ids) = (owner.to_string(), ids.to_vec());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut renewed = 0;
                {
                    let mut st = tx.prepare_cached(concat!(
                        "UPDATE jobs SET lease_until = ?1 \
                         WHERE id = ?2 AND lease_owner = ?3 AND NOT ",
                        is_final_sql!("state")
                    ))?;
                    for id in &ids {
                        renewed += st.execute(params![until_ms, id, owner])? as u64;
                    }
                }
                tx.commit()?;
                Ok(renewed)
            })
            .await
    }

    pub(crate) async fn lapsed_leases(
        &self,
        queue: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let queue = queue.to_string();
        let limit = if limit > 0 { limit } else { -1 };
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE lease_until < ?1 AND queue = ?2 AND NOT ",
                    is_final_sql!("state"),
                    " ORDER BY lease_until, id LIMIT ?3"
                ))?;
                let rows = st.query_map(params![now_ms, queue, limit], job_row)?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn claim_lapsed(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.pool
            .run(move |conn| {
                let claimed = conn
                    .prepare_cached(concat!(
                        "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 \
                         WHERE id = ?3 AND lease_until < ?4 AND NOT ",
                        is_final_sql!("state")
                    ))?
                    .execute(params![owner, until_ms, id, now_ms])?;
                Ok(claimed == 1)
            })
            .await
    }

    pub(crate) async fn schedule(
        &self,
        job: &NewJob,
        options: &MessageOptions,
        worker: &str,
        now: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (job, o) = (job.clone(), options.clone());
        let (worker, detail) = (worker.to_string(), detail.to_string());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = tx
                    .prepare_cached(concat!(
                        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, \
                         state, worker, submitted_ms, deliveries, eta_ms, expires_ms, \
                         time_limit_ms, soft_time_limit_ms, reply_to) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'SCHEDULED', ?9, ?10, 1, ?11, \
                         ?12, ?13, ?14, ?15) \
                         ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                         state = 'SCHEDULED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
                         expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
                         soft_time_limit_ms = excluded.soft_time_limit_ms, \
                         reply_to = excluded.reply_to, lease_owner = NULL, lease_until = NULL",
                        live_row!()
                    ))?
                    .execute(params![
                        job.id,
                        job.task,
                        job.queue,
                        job.args,
                        job.server,
                        job.recipe,
                        job.kind,
                        job.hosts,
                        worker,
                        job.submitted_ms,
                        o.eta_ms,
                        o.expires_ms,
                        o.time_limit_ms,
                        o.soft_time_limit_ms,
                        o.reply_to,
                    ])?;
                if changed > 0 {
                    tx.prepare_cached(
                        "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                         VALUES (?1, 'SCHEDULED', ?2, ?3, ?4)",
                    )?
                    .execute(params![job.id, worker, now, detail])?;
                }
                tx.commit()
            })
            .await
    }

    pub(crate) async fn claim_due(
        &self,
        queue: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let (queue, owner) = (queue.to_string(), owner.to_string());
        self.pool
            .run(move |conn| {
                // One statement, under SQLite's one write lock: a racing claim finds them taken.
                let mut st = conn.prepare_cached(concat!(
                    "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 WHERE id IN \
                     (SELECT id FROM jobs WHERE state = 'SCHEDULED' AND queue = ?3 \
                     AND eta_ms <= ?4 AND lease_owner IS NULL ORDER BY eta_ms LIMIT ?5) \
                     AND state = 'SCHEDULED' AND lease_owner IS NULL RETURNING ",
                    job_columns!()
                ))?;
                let rows = st.query_map(params![owner, until_ms, queue, now_ms, limit], job_row)?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn requeued(
        &self,
        id: &str,
        by: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let (id, by, detail) = (id.to_string(), by.to_string(), detail.to_string());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(concat!(
                    "UPDATE jobs SET state = 'PENDING', lease_owner = NULL, lease_until = NULL \
                     WHERE id = ?1 AND lease_owner = ?2 AND NOT ",
                    is_final_sql!("state")
                ))?
                .execute(params![id, by])?;
                // A job deleted meanwhile (db_reset) gets no history row of its own.
                tx.prepare_cached(
                    "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                     SELECT ?1, 'REQUEUED', ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
                )?
                .execute(params![id, by, now, detail])?;
                tx.commit()
            })
            .await
    }

    pub(crate) async fn reset(&self) -> Result<u64, StoreError> {
        self.pool
            .run(|conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Every job goes, so every kept count is 0. The delete trigger would record
                // each job's going (9.4 s at 1,000,000 jobs, where the reset took 0.2 s
                // without it) and keep SQLite from emptying the table at once: it is dropped
                // and made again from its own definition, within the transaction, which holds
                // the write lock throughout.
                let trigger: String = tx.query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' \
                     AND name = 'jobs_counts_delete'",
                    [],
                    |r| r.get(0),
                )?;
                tx.execute_batch("DROP TRIGGER jobs_counts_delete")?;
                tx.execute("DELETE FROM job_events", [])?;
                let removed = tx.execute("DELETE FROM jobs", [])?;
                tx.execute_batch(&trigger)?;
                tx.execute_batch(
                    "DELETE FROM job_count_changes; DELETE FROM job_state_counts; \
                     DELETE FROM job_worker_counts; DELETE FROM job_finished_minutes;",
                )?;
                tx.commit()?;
                Ok(removed as u64)
            })
            .await
    }

    pub(crate) async fn close(&self) {
        self.pool.close();
    }
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        task: r.get(1)?,
        queue: r.get(2)?,
        args: r.get(3)?,
        server: r.get(4)?,
        recipe: r.get(5)?,
        kind: r.get(6)?,
        hosts: r.get(7)?,
        batch: r.get(8)?,
        state: r.get(9)?,
        worker: r.get(10)?,
        submitted_ms: r.get(11)?,
        started_ms: r.get(12)?,
        finished_ms: r.get(13)?,
        result: r.get(14)?,
        error: r.get(15)?,
        deliveries: r.get(16)?,
        retries: r.get(17)?,
        output: r.get(18)?,
        lease_owner: r.get(19)?,
        lease_until: r.get(20)?,
        options: MessageOptions {
            eta_ms: r.get(21)?,
            expires_ms: r.get(22)?,
            time_limit_ms: r.get(23)?,
            soft_time_limit_ms: r.get(24)?,
            reply_to: r.get(25)?,
        },
    })
}

/// ` WHERE column = ? AND ...` for the filter's columns, and their values in order.
fn where_clause(filter: &JobFilter) -> (String, Vec<rusqlite::types::Value>) {
    let (columns, binds): (Vec<String>, Vec<rusqlite::types::Value>) = filter
        .columns()
        .map(|(column, value)| (format!("{column} = ?"), value.to_string().into()))
        .unzip();
    if columns.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", columns.join(" AND ")), binds)
    }
}

/// The (text, count) rows of `sql`.
fn pairs(
    conn: &Connection,
    sql: &str,
    binds: &[rusqlite::types::Value],
) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(binds), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests;

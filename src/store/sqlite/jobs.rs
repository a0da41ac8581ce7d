//! Jobs as commands and the web server write and read them: published (PENDING) or taken
//! back, looked up one by one with their history, listed by filter, and all deleted.

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::columns::{job_row, where_clause};
use super::{commit, counts, Store};
use crate::store::batch;
use crate::store::{job_columns, EventRow, JobFilter, JobRow, NewJob, StoreError};

impl Store {
    pub(crate) async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let jobs = jobs.to_vec();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                commit::insert_pending(&tx, &jobs)?;
                commit::insert_history(&tx, &batch::published(&jobs))?;
                counts::fold_counts_if_long(&tx)?;
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
                tx.execute_batch(
                    "DELETE FROM job_edges; DELETE FROM job_outbox; DELETE FROM job_retries; \
                     DELETE FROM unique_keys; DELETE FROM flow_slots;",
                )?;
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
}

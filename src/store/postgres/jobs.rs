//! Jobs as commands and the web server write and read them: published (PENDING) or taken
//! back, looked up one by one with their history, listed by filter, and all deleted.

use sqlx::Row;

use super::columns::{job_row, where_clause};
use super::{commit, Store};
use crate::store::batch;
use crate::store::{
    job_columns, EventRow, JobFilter, JobRow, NewJob, StoreError, PENDING, SUCCESS,
};

impl Store {
    pub(crate) async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.fail())?;
        commit::insert_pending(&mut tx, jobs)
            .await
            .map_err(self.fail())?;
        commit::insert_history(&mut tx, &batch::published(jobs))
            .await
            .map_err(self.fail())?;
        tx.commit().await.map_err(self.fail())
    }

    pub(crate) async fn delete_unpublished(&self, batch: &str) -> Result<u64, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM job_events WHERE job_id IN \
                 (SELECT id FROM jobs WHERE batch = $1 AND state = 'PENDING')",
            )
            .bind(batch)
            .execute(&mut *tx)
            .await?;
            let done = sqlx::query("DELETE FROM jobs WHERE batch = $1 AND state = 'PENDING'")
                .bind(batch)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn state_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.fail())
    }

    /// Up to `limit` ids that begin or end with `part`, in order.
    pub(crate) async fn ids_around(
        &self,
        part: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE starts_with(id, $1) OR right(id, char_length($1)) = $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(part)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.fail())?;
        row.as_ref().map(job_row).transpose().map_err(self.fail())
    }

    pub(crate) async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, worker, at_ms, detail, later FROM job_events \
             WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let first = EventRow {
                state: r.try_get(0).map_err(self.fail())?,
                worker: r.try_get(1).map_err(self.fail())?,
                at_ms: r.try_get(2).map_err(self.fail())?,
                detail: r.try_get(3).map_err(self.fail())?,
            };
            let later: Option<String> = r.try_get(4).map_err(self.fail())?;
            batch::unfold(id, first, later.as_deref(), &mut out)?;
        }
        Ok(out)
    }

    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        // PENDING and SUCCESS have no index (see `where_clause`): by one of them alone, the
        // kept count says when no row is left to find, which a scan would read every row for.
        if let Some(Some(state @ (PENDING | SUCCESS))) = filter.kept_counts() {
            if self.kept_count(Some(state)).await? <= filter.offset {
                return Ok(Vec::new());
            }
        }
        let (clause, binds) = where_clause(filter);
        let limit = if filter.limit > 0 {
            filter.limit
        } else {
            i64::MAX
        };
        let n = binds.len();
        let sql = format!(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs{} ORDER BY submitted_ms DESC, id LIMIT ${} OFFSET ${}"
            ),
            clause,
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        self.fetch_jobs(q.bind(limit).bind(filter.offset)).await
    }

    pub(crate) async fn reset(&self) -> Result<u64, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            // Every job goes, so every kept count is 0. A DELETE would hand all its rows to
            // the delete trigger to sum (reset of 1,000,000 jobs: 2.7 s, 0.7 s without the
            // trigger); TRUNCATE fires no row triggers and empties the tables at once. Its lock
            // waits for the transactions using `jobs` and keeps the others out until the
            // commit, so the count taken under it is what goes, and no change falls between.
            sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            let removed: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_state_counts",
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "TRUNCATE jobs, job_events, job_state_counts, job_worker_counts, \
                 job_finished_minutes, job_edges, job_outbox, job_retries, unique_keys, flow_slots",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(u64::try_from(removed).unwrap_or(0))
        };
        run.await.map_err(self.fail())
    }
}

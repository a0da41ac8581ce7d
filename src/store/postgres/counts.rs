//! How many jobs: counted by filter, or read off the counts the store keeps (migration 0006:
//! each is the sum of its rows, which the triggers add and `job_counts_fold` sums up); run
//! times as a histogram.

use sqlx::Row;

use super::columns::where_clause;
use super::Store;
use crate::store::sql::duration_buckets;
use crate::store::{Counts, JobFilter, StoreError};

impl Store {
    pub(crate) async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM jobs{clause}");
        let mut q = sqlx::query_scalar(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_one(&self.pool).await.map_err(self.fail())
    }

    pub(crate) async fn counts_by_state(&self, filter: &JobFilter) -> Result<Counts, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT state, COUNT(*) FROM jobs{clause} GROUP BY state ORDER BY state");
        let mut q = sqlx::query_as(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool).await.map_err(self.fail())
    }

    /// The kept counts (see migration 0006: each is the sum of its rows, folded or not), of
    /// `state` alone or of every state.
    pub(crate) async fn kept_count(&self, state: Option<&str>) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_state_counts \
             WHERE $1::TEXT IS NULL OR state = $1",
        )
        .bind(state)
        .fetch_one(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn kept_counts_by_state(
        &self,
        state: Option<&str>,
    ) -> Result<Counts, StoreError> {
        sqlx::query_as(
            "SELECT state, CAST(SUM(n) AS BIGINT) FROM job_state_counts \
             WHERE $1::TEXT IS NULL OR state = $1 GROUP BY state HAVING SUM(n) > 0 ORDER BY state",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn counts_by_worker(&self) -> Result<Counts, StoreError> {
        sqlx::query_as(
            "SELECT worker, CAST(SUM(n) AS BIGINT) FROM job_worker_counts \
             GROUP BY worker HAVING SUM(n) > 0 ORDER BY worker",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    /// (clock minute, jobs finished in it) from minute `first` on, for the minutes that have any.
    pub(crate) async fn finished_per_minute(
        &self,
        first: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT minute, CAST(SUM(n) AS BIGINT) FROM job_finished_minutes \
             WHERE minute >= $1 GROUP BY minute HAVING SUM(n) > 0",
        )
        .bind(first)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    /// The run-time histogram's columns (see [`crate::store::DurationHistogram::from_columns`]).
    pub(crate) async fn run_times(&self, bounds_ms: &[i64]) -> Result<Vec<i64>, StoreError> {
        let buckets = duration_buckets(bounds_ms.len(), |i| format!("${i}"));
        // SUM of a BIGINT is NUMERIC: cast back, so that every column is an i64.
        let sql = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(finished_ms - started_ms), 0) AS BIGINT){buckets} \
             FROM jobs WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL"
        );
        let mut q = sqlx::query(&sql);
        for b in bounds_ms {
            q = q.bind(*b);
        }
        let row = q.fetch_one(&self.pool).await.map_err(self.fail())?;
        (0..bounds_ms.len() + 2)
            .map(|i| row.try_get(i))
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }
}

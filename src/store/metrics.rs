//! Aggregates for `/metrics`: computed by the database, never by loading the rows.

use sqlx::Row;

use super::{Store, StoreError};

/// Run times (`finished_ms - started_ms`) of every job that has both, bucketed by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationHistogram {
    /// How many jobs ran at most `bound_ms`, for each requested bound (cumulative).
    pub at_most: Vec<(i64, i64)>,
    pub count: i64,
    pub sum_ms: i64,
}

impl Store {
    /// One aggregate query: a `SUM(CASE ...)` per bound, plus the count and the sum.
    pub async fn duration_histogram(
        &self,
        bounds_ms: &[i64],
    ) -> Result<DurationHistogram, StoreError> {
        const RAN: &str = "(finished_ms - started_ms)";
        // The bounds are our integers, not input: inlined, so both backends see plain literals.
        let buckets: String = bounds_ms
            .iter()
            .map(|b| {
                format!(
                    ", CAST(COALESCE(SUM(CASE WHEN {RAN} <= {b} THEN 1 ELSE 0 END), 0) AS BIGINT)"
                )
            })
            .collect();
        // SUM of a BIGINT is NUMERIC on PostgreSQL; the casts keep every column an i64.
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM({RAN}), 0) AS BIGINT){buckets} \
             FROM jobs WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL"
        );
        let row = sqlx::query(&sql).fetch_one(&self.pool).await?;
        let at_most = bounds_ms
            .iter()
            .enumerate()
            .map(|(i, b)| Ok((*b, row.try_get::<i64, _>(i + 2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(DurationHistogram {
            at_most,
            count: row.try_get(0)?,
            sum_ms: row.try_get(1)?,
        })
    }
}

//! Leases on long jobs: renewed by their worker, found lapsed and claimed by one reaper, which
//! publishes the job again.

use super::columns::bind_entry;
use super::Store;
use crate::store::requests::{Claim, Entry, First};
use crate::store::{is_final_sql, job_columns, JobRow, StoreError};

impl Store {
    pub(crate) async fn renew_leases(&self, ids: &[String], c: &Claim) -> Result<u64, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE jobs SET lease_until = $1 \
             WHERE id = ANY($2) AND lease_owner = $3 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(c.until_ms)
        .bind(ids)
        .bind(&c.owner)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn lapsed_leases(
        &self,
        first: &First,
        now_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let limit = if first.limit > 0 {
            first.limit
        } else {
            i64::MAX
        };
        let q = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE lease_until < $1 AND queue = $2 AND NOT ",
            is_final_sql!("state"),
            " ORDER BY lease_until, id LIMIT $3"
        ))
        .bind(now_ms)
        .bind(&first.queue)
        .bind(limit);
        self.fetch_jobs(q).await
    }

    pub(crate) async fn claim_lapsed(&self, id: &str, c: &Claim) -> Result<bool, StoreError> {
        // One UPDATE: a racing claim waits for this row's lock, then finds the lease taken.
        let done = sqlx::query(concat!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 \
             WHERE id = $3 AND lease_until < $4 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(&c.owner)
        .bind(c.until_ms)
        .bind(id)
        .bind(c.now_ms)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(done.rows_affected() == 1)
    }

    /// `e.worker` published job `e.job_id` again.
    pub(crate) async fn requeued(&self, e: &Entry) -> Result<(), StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(concat!(
                "UPDATE jobs SET state = 'PENDING', lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND NOT ",
                is_final_sql!("state")
            ))
            .bind(&e.job_id)
            .bind(&e.worker)
            .execute(&mut *tx)
            .await?;
            // A job deleted meanwhile (db_reset) gets no history row of its own.
            bind_entry(
                sqlx::query(
                    "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                     SELECT $1, 'REQUEUED', $2, $3, $4 \
                     WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1)",
                ),
                e,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        run.await.map_err(self.fail())
    }
}

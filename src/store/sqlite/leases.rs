//! Leases on long jobs: renewed by their worker, found lapsed and claimed by one reaper, which
//! publishes the job again.

use rusqlite::{params, TransactionBehavior};

use super::columns::job_row;
use super::Store;
use crate::store::requests::{Claim, Entry, First};
use crate::store::{is_final_sql, job_columns, JobRow, StoreError};

impl Store {
    pub(crate) async fn renew_leases(&self, ids: &[String], c: &Claim) -> Result<u64, StoreError> {
        let (ids, c) = (ids.to_vec(), c.clone());
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
                        renewed += st.execute(params![c.until_ms, id, c.owner])? as u64;
                    }
                }
                tx.commit()?;
                Ok(renewed)
            })
            .await
    }

    pub(crate) async fn lapsed_leases(
        &self,
        first: &First,
        now_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let queue = first.queue.clone();
        let limit = if first.limit > 0 { first.limit } else { -1 };
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

    pub(crate) async fn claim_lapsed(&self, id: &str, c: &Claim) -> Result<bool, StoreError> {
        let (id, c) = (id.to_string(), c.clone());
        self.pool
            .run(move |conn| {
                let claimed = conn
                    .prepare_cached(concat!(
                        "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 \
                         WHERE id = ?3 AND lease_until < ?4 AND NOT ",
                        is_final_sql!("state")
                    ))?
                    .execute(params![c.owner, c.until_ms, id, c.now_ms])?;
                Ok(claimed == 1)
            })
            .await
    }

    /// `e.worker` published job `e.job_id` again.
    pub(crate) async fn requeued(&self, e: &Entry) -> Result<(), StoreError> {
        let e = e.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(concat!(
                    "UPDATE jobs SET state = 'PENDING', lease_owner = NULL, lease_until = NULL \
                     WHERE id = ?1 AND lease_owner = ?2 AND NOT ",
                    is_final_sql!("state")
                ))?
                .execute(params![e.job_id, e.worker])?;
                // A job deleted meanwhile (db_reset) gets no history row of its own.
                tx.prepare_cached(
                    "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                     SELECT ?1, 'REQUEUED', ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
                )?
                .execute(params![e.job_id, e.worker, e.at_ms, e.detail])?;
                tx.commit()
            })
            .await
    }
}

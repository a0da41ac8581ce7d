//! Unique jobs' keys: taken in the transaction that stores the job, refused by the primary key
//! of `unique_keys` when held (SQLite has one writer: the transaction is IMMEDIATE), released by
//! the triggers of migration 0015.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{commit, counts, Store};
use crate::store::{batch, Duplicate, NewJob, StoreError, UniqueClaim};

impl Store {
    pub(crate) async fn insert_pending_unique(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
        now_ms: i64,
    ) -> Result<Vec<Duplicate>, StoreError> {
        let (jobs, claims) = (jobs.to_vec(), claims.to_vec());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let duplicates = take_keys(&tx, &claims, now_ms)?;
                let stored: Vec<NewJob> = jobs
                    .into_iter()
                    .filter(|j| !duplicates.iter().any(|d| d.job_id == j.id))
                    .collect();
                commit::insert_pending(&tx, &stored)?;
                commit::insert_history(&tx, &batch::published(&stored))?;
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(duplicates)
            })
            .await
    }

    pub(crate) async fn receive_unique(
        &self,
        job: &NewJob,
        claim: &UniqueClaim,
        now_ms: i64,
    ) -> Result<Option<Duplicate>, StoreError> {
        let (job, claim) = (job.clone(), claim.clone());
        self.pool
            .run(move |conn| {
                let known = |c: &Connection| {
                    c.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?
                        .exists([&job.id])
                };
                // A job cm published (the usual case) is known without taking the write lock.
                if known(conn)? {
                    return Ok(None);
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if known(&tx)? {
                    return Ok(None);
                }
                let duplicate = take_keys(&tx, std::slice::from_ref(&claim), now_ms)?.pop();
                if duplicate.is_none() {
                    let stored = [job];
                    commit::insert_pending(&tx, &stored)?;
                    commit::insert_history(&tx, &batch::published(&stored))?;
                }
                tx.commit()?;
                Ok(duplicate)
            })
            .await
    }

    pub(crate) async fn unique_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.pool.run(move |conn| holder(conn, &key)).await
    }
}

/// Inserts each claim's key, in order; those held already (by a job stored earlier, or by an
/// earlier claim of the same list) come back as duplicates.
pub(super) fn take_keys(
    conn: &Connection,
    claims: &[UniqueClaim],
    now_ms: i64,
) -> rusqlite::Result<Vec<Duplicate>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO unique_keys (key, job_id, hold, at_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (key) DO NOTHING",
    )?;
    let mut duplicates = Vec::new();
    for c in claims {
        if insert.execute(rusqlite::params![c.key, c.job_id, c.hold, now_ms])? == 1 {
            continue;
        }
        // One writer: the row that refused the key is there to read.
        let holder = holder(conn, &c.key)?.unwrap_or_default();
        if holder != c.job_id {
            duplicates.push(Duplicate {
                job_id: c.job_id.clone(),
                key: c.key.clone(),
                holder,
            });
        }
    }
    Ok(duplicates)
}

fn holder(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT job_id FROM unique_keys WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

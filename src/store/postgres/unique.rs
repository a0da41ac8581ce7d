//! Unique jobs' keys: taken in the transaction that stores the job, refused by the primary key
//! of `unique_keys` when held, released by the triggers of migration 0015. Two publishers on two
//! hosts racing for one key: the second's INSERT waits for the first's transaction and then does
//! nothing (it committed) or takes the key (it rolled back); never two holders.

use sqlx::PgConnection;

use super::{commit, Store};
use crate::store::{batch, Duplicate, NewJob, StoreError, UniqueClaim};

/// A key released between our refused INSERT and the look at its holder is tried again; so
/// often in a row would take a holder starting and a new one publishing each time.
const TRIES: usize = 5;

impl Store {
    pub(crate) async fn insert_pending_unique(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
        now_ms: i64,
    ) -> Result<Vec<Duplicate>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let duplicates = take_keys(&mut tx, claims, now_ms).await?;
            let stored: Vec<NewJob> = jobs
                .iter()
                .filter(|j| !duplicates.iter().any(|d| d.job_id == j.id))
                .cloned()
                .collect();
            commit::insert_pending(&mut tx, &stored).await?;
            commit::insert_history(&mut tx, &batch::published(&stored)).await?;
            tx.commit().await?;
            Ok(duplicates)
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn receive_unique(
        &self,
        job: &NewJob,
        claim: &UniqueClaim,
        now_ms: i64,
    ) -> Result<Option<Duplicate>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let known: Option<i32> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = $1")
                .bind(&job.id)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_some() {
                return Ok(None);
            }
            let duplicate = take_keys(&mut tx, std::slice::from_ref(claim), now_ms)
                .await?
                .pop();
            if duplicate.is_none() {
                let stored = std::slice::from_ref(job);
                commit::insert_pending(&mut tx, stored).await?;
                commit::insert_history(&mut tx, &batch::published(stored)).await?;
            }
            tx.commit().await?;
            Ok(duplicate)
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn unique_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT job_id FROM unique_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.fail())
    }
}

/// Inserts each claim's key, in order; those held already (by a job stored earlier, or by an
/// earlier claim of the same list) come back as duplicates.
pub(super) async fn take_keys(
    conn: &mut PgConnection,
    claims: &[UniqueClaim],
    now_ms: i64,
) -> Result<Vec<Duplicate>, sqlx::Error> {
    let mut duplicates = Vec::new();
    for c in claims {
        for _ in 0..TRIES {
            let taken = sqlx::query(
                "INSERT INTO unique_keys (key, job_id, hold, at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&c.key)
            .bind(&c.job_id)
            .bind(c.hold)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if taken == 1 {
                break;
            }
            // A statement of its own sees what the INSERT waited for committed.
            let holder: Option<String> =
                sqlx::query_scalar("SELECT job_id FROM unique_keys WHERE key = $1")
                    .bind(&c.key)
                    .fetch_optional(&mut *conn)
                    .await?;
            match holder {
                Some(holder) if holder == c.job_id => break,
                Some(holder) => {
                    duplicates.push(Duplicate {
                        job_id: c.job_id.clone(),
                        key: c.key.clone(),
                        holder,
                    });
                    break;
                }
                // Released since: try to take it again.
                None => {}
            }
        }
    }
    Ok(duplicates)
}

//! Unique jobs' keys, through either backend: taken with the job's row, in one transaction;
//! released by the store's own triggers (migration 0015) when the window of a key ends.

use super::{now_ms, Backend, Duplicate, NewJob, Store, StoreError, UniqueClaim};

impl Store {
    /// Records published jobs as PENDING, as [`Store::insert_pending`], those with a unique key
    /// (`claims`) only if they can take it: in the same transaction, the key's row is inserted
    /// or found held. A job whose key is held is not stored (nor may it be published): one
    /// [`Duplicate`] each, naming the holder (an earlier job of `jobs` with the same key, too).
    pub async fn insert_pending_unique(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
    ) -> Result<Vec<Duplicate>, StoreError> {
        if claims.is_empty() {
            return self.insert_pending(jobs).await.map(|()| Vec::new());
        }
        on_backend!(self, b => b.insert_pending_unique(jobs, claims, now_ms()).await)
    }

    /// The first receipt of a job no cm publisher stored (a Celery client's): if it has no row
    /// yet, its key is taken and the job stored PENDING in one transaction, or, the key being
    /// held by another job, nothing is stored and the [`Duplicate`] returned. A job that has a
    /// row (cm published it, or this is a redelivery) is left as it is: `None`.
    pub async fn receive_unique(
        &self,
        job: &NewJob,
        claim: &UniqueClaim,
    ) -> Result<Option<Duplicate>, StoreError> {
        on_backend!(self, b => b.receive_unique(job, claim, now_ms()).await)
    }

    /// The job that holds unique key `key`, if any.
    pub async fn unique_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        on_backend!(self, b => b.unique_holder(key).await)
    }
}

//! The worker's job slots: one permit per job that may run at once, a number that changes while
//! the worker runs (`cm queue scale`, Celery's `pool_grow`/`pool_shrink`). Growing adds permits
//! at once; shrinking takes permits away as they come free, so running jobs are never stopped
//! for it and the jobs started never exceed the target once the extra permits are gone.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::stats::Counters;

pub(super) struct Slots {
    sem: Arc<Semaphore>,
    sizes: Mutex<Sizes>,
    /// Where `cm queue status` reads how many slots there are now.
    stats: Arc<Counters>,
}

struct Sizes {
    /// The slots asked for.
    target: usize,
    /// The permits that exist: free ones and those held by running jobs.
    total: usize,
}

impl Slots {
    pub(super) fn new(n: usize, stats: Arc<Counters>) -> Self {
        stats.set_slots(n);
        Self {
            sem: Arc::new(Semaphore::new(n)),
            sizes: Mutex::new(Sizes {
                target: n,
                total: n,
            }),
            stats,
        }
    }

    /// Asks for `n` slots: more at once, fewer as running jobs end.
    pub(super) fn resize(&self, n: usize) {
        let mut s = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
        s.target = n;
        if s.total < n {
            self.sem.add_permits(n - s.total);
            s.total = n;
            self.stats.set_slots(n);
        }
    }

    /// A free slot; a permit over the target is forgotten on the way instead.
    pub(super) async fn acquire(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        loop {
            let permit = self.sem.clone().acquire_owned().await?;
            let mut s = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
            if s.total <= s.target {
                return Ok(permit);
            }
            permit.forget();
            s.total -= 1;
            self.stats.set_slots(s.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn free(slots: &Slots) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(Duration::from_millis(20), slots.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn slots_grow_at_once_and_shrink_as_jobs_end() {
        let stats = Arc::new(Counters::default());
        let slots = Slots::new(1, stats.clone());
        let a = free(&slots).await.expect("one slot");
        assert!(free(&slots).await.is_none(), "only one");
        slots.resize(3);
        let b = free(&slots).await.expect("grown");
        let c = free(&slots).await.expect("grown");
        assert_eq!(stats.snapshot().concurrency, Some(3));
        slots.resize(1);
        drop(a);
        drop(b);
        assert!(
            free(&slots).await.is_none(),
            "c still runs: the one slot is taken"
        );
        assert_eq!(stats.snapshot().concurrency, Some(1));
        drop(c);
        assert!(free(&slots).await.is_some(), "c ended: one slot again");
    }
}

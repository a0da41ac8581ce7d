//! `[retention]`: each worker prunes finished jobs every `interval`, in batches of at most
//! `store::PRUNE_BATCH` jobs a transaction, on the store's own connections (never the
//! group-commit writer that jobs' states go through). Workers pruning at once delete each job
//! once; the counts stay exact (the store's delete triggers).

use std::sync::Arc;

use tracing::{info, warn};

use super::context::WorkerState;
use crate::store::{self, Prune};

/// Prunes every `interval` until the session ends.
pub(super) async fn run(worker: Arc<WorkerState>) {
    let Some(retention) = worker.cfg.retention else {
        return;
    };
    loop {
        tokio::time::sleep(retention.interval).await;
        match worker
            .store
            .prune(&Prune::of(&retention, store::now_ms(), false))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!("retention: {n} finished job(s) deleted"),
            Err(e) => warn!(
                "retention: pruning finished jobs: {e}; trying again in {:?}",
                retention.interval
            ),
        }
    }
}

//! Each session drains the store's outbox: the jobs released by a parent's end (any worker's,
//! on any host) or by a retry, published from the store to their own queues. It looks when this
//! worker's commit may have released some (`WorkerState::released`), and every [`POLL`] for the
//! others'. A look that finds nothing is one read, no write lock.
//!
//! `CM_TEST_OUTBOX` is a test hook: `off` never drains (a worker that dies after its commit,
//! before the publish); `stall` claims rows and never publishes them (one that dies holding a
//! claim, which lapses after `[worker] lease_seconds`).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::context::SessionContext;
use crate::client::outbox;
use crate::store;

/// How often the outbox is looked at for what other workers' commits released.
const POLL: Duration = Duration::from_millis(250);

pub(super) async fn drain(ctx: Arc<SessionContext>) {
    let w = &*ctx.worker;
    let hook = std::env::var("CM_TEST_OUTBOX").unwrap_or_default();
    if hook == "off" {
        return;
    }
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = w.released.notified() => {}
        }
        match w.store.outbox_waiting(store::now_ms()).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                if !failing {
                    warn!("looking at the outbox of released jobs: {e}");
                }
                failing = true;
                continue;
            }
        }
        if hook == "stall" {
            let now = store::now_ms();
            let until = now.saturating_add(i64::try_from(w.cfg.lease.as_millis()).unwrap_or(0));
            let _ = w.store.claim_outbox(&w.node, now, until, 100, None).await;
            continue;
        }
        match outbox::drain(&w.store, &ctx.publisher, &w.node, w.cfg.lease, None).await {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    warn!("publishing released jobs from the outbox: {e}");
                }
                failing = true;
            }
        }
    }
}

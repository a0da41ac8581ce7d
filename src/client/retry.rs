//! `cm jobs retry` and `POST /api/jobs/ID/retry`: a final job that did not succeed runs again,
//! as a new job linked to it, and the children its end revoked wait again, for the new one.
//!
//! Why a new job and not the same id run again: a final state is never overwritten, by any
//! statement, and that rule is what keeps a late event of an earlier run (a worker cut off and
//! presumed dead, a duplicate delivery) from changing a job's end. Reopening the id would need a
//! run number in every message and every event's statement; a new id keeps the rule whole, and
//! the link (`retry of`, `retried as`) and both histories say what happened.

use crate::amqp::Brokers;
use crate::client::publish::Publisher;
use crate::config::Config;
use crate::store::Store;

/// The unique key (and its hold) a new run of job `id` takes, when its task has one; `None`
/// too for a job the store does not have (the retry refuses it) or whose message no longer
/// binds this config's task.
async fn unique_key(
    cfg: &Config,
    store: &Store,
    id: &str,
) -> anyhow::Result<Option<(String, &'static str)>> {
    let Some(row) = store.get(id).await? else {
        return Ok(None);
    };
    let Ok(msg) = crate::jobs::stored_message(&row) else {
        return Ok(None);
    };
    let job = crate::jobs::Job::from_message(&msg, cfg).ok();
    Ok(job
        .and_then(|j| j.unique_claim(cfg, id))
        .map(|c| (c.key, c.hold)))
}

/// Retries job `id` for `by` (refused by the store, with nothing changed: no such job, not
/// final, SUCCESS, retried already): the new job's id. It is published at once; should that
/// fail, a worker publishes it from the store's outbox.
pub async fn retry(
    cfg: &Config,
    brokers: &Brokers,
    store: &Store,
    id: &str,
    by: &str,
) -> anyhow::Result<String> {
    let unique = unique_key(cfg, store, id).await?;
    let new_id = store.retry(id, by, unique).await?;
    match Publisher::open(cfg, brokers).await {
        Ok(publisher) => {
            publisher.release(store, std::slice::from_ref(&new_id)).await;
            publisher.close().await;
        }
        Err(e) => tracing::warn!(
            "job {new_id} (the retry of {id}) is stored; publishing it: {e}; a worker publishes it from the outbox"
        ),
    }
    Ok(new_id)
}

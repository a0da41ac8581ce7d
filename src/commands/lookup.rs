//! Finding what a command that reads the store names: the store itself (never created by a
//! reader) and a job by its id or a unique part of it.

use crate::config::{Config, StoreLocation};
use crate::exit::CmError;
use crate::store::Store;

/// The store, if it is there: a command that only reads never creates one (a typo in
/// `CM_STORE_URL` would leave an empty database wherever it points).
pub(super) async fn open_existing(cfg: &Config) -> anyhow::Result<Store> {
    if let StoreLocation::SqliteFile(path) = &cfg.store_url {
        if !path.exists() {
            return Err(CmError::NoInput(format!(
                "no status store at {}: nothing was published or run with this config yet (or [store] url / CM_STORE_URL names another file)",
                path.display()
            ))
            .into());
        }
    }
    Ok(Store::open(&cfg.store_url).await?)
}

/// The job `given` names (a whole id, or a unique start or end of one), or exit 64 saying why.
pub(super) async fn find(store: &Store, given: &str) -> anyhow::Result<crate::store::JobRow> {
    match crate::client::lookup::find(store, given).await? {
        crate::client::lookup::Found::Job(job) => Ok(*job),
        other => Err(CmError::BadArgument(other.refusal(given).unwrap_or_default()).into()),
    }
}

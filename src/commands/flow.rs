//! `cm queue pause|resume|scale QUEUE [--host H]`: orders kept in the store for the queue's
//! workers (`store::controls`), which follow them within a second, on every host and after
//! every restart.

use crate::client::flow::{configured, describe, queue_order, OrderError};
use crate::config::Config;
use crate::exit::Code;
use crate::store::controls::{Control, Scope};
use crate::store::Store;

pub async fn order(
    cfg: &Config,
    queue: &str,
    host: Option<String>,
    control: Control,
) -> anyhow::Result<Code> {
    // Before the store is opened (an SQLite file would be made): a typo changes nothing.
    configured(cfg, queue)?;
    let scope = host.map_or(Scope::Everywhere, Scope::Host);
    let store = Store::open(&cfg.store_url).await?;
    let by = format!("cm queue ({})", whoami());
    match queue_order(cfg, &store, queue, &scope, control, &by).await {
        Ok(()) => {}
        // Each as itself, for its exit code.
        Err(OrderError::UnknownQueue(e)) => return Err(e.into()),
        Err(OrderError::Store(e)) => return Err(e.into()),
    }
    crate::outln!("{}", describe(queue, &scope, control));
    Ok(Code::Success)
}

/// Who gave the order, for the row: the user and host, as far as this process knows them.
pub(super) fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    format!("{user}@{host}")
}

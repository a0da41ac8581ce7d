//! What starts a worker's warm shutdown: its owner's request (a process's SIGTERM or SIGINT,
//! or the future an in-process caller hands to `serve`), or `shutdown` over Celery's remote
//! control, which stops the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Notify;

/// Asks for the warm shutdown a SIGTERM starts (`celery control shutdown`).
#[derive(Clone)]
pub(super) struct RemoteStop(Arc<Notify>);

impl RemoteStop {
    pub(super) fn request(&self) {
        // Kept until `Shutdown::requested` looks, if nobody waits right now.
        self.0.notify_one();
    }
}

/// The owner's request and the remote control's, as one: the serving loops wait on it.
pub(super) struct Shutdown {
    owner: Pin<Box<dyn Future<Output = &'static str> + Send>>,
    remote: Arc<Notify>,
    /// Whoever asked first: every later call answers at once (a future runs to its end once).
    asked_by: Option<&'static str>,
}

impl Shutdown {
    /// `owner` ends with the name of what asked (`"SIGTERM"`), when it asks.
    pub(super) fn new(owner: impl Future<Output = &'static str> + Send + 'static) -> Self {
        Self {
            owner: Box::pin(owner),
            remote: Arc::new(Notify::new()),
            asked_by: None,
        }
    }

    /// The remote control's way to ask.
    pub(super) fn remote(&self) -> RemoteStop {
        RemoteStop(self.remote.clone())
    }

    /// The name of what asked for the shutdown, once something has. Cancel-safe: the serving
    /// loops race it against their own work.
    pub(super) async fn requested(&mut self) -> &'static str {
        if let Some(name) = self.asked_by {
            return name;
        }
        let name = tokio::select! {
            name = &mut self.owner => name,
            () = self.remote.notified() => "remote shutdown",
        };
        self.asked_by = Some(name);
        name
    }
}

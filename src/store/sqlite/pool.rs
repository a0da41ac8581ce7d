//! A few rusqlite connections for the commands, the web server and a worker's rare reads, used
//! on tokio's blocking threads so that a busy wait never stalls the async runtime.
//!
//! Connections open on first need, up to `size`, and stay open for the next caller.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{error, settings};
use crate::store::StoreError;

#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// The store as error messages name it.
    name: Arc<str>,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use.
    slots: Arc<Semaphore>,
    /// Where more connections come from; `None` for an in-memory database, whose one
    /// connection is the database.
    file: Option<(PathBuf, Duration)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Pool {
    /// Up to `size` connections to the file at `path`, `first` among them.
    pub(crate) fn file(
        name: Arc<str>,
        first: Connection,
        path: PathBuf,
        busy: Duration,
        size: usize,
    ) -> Self {
        Self::new(name, first, Some((path, busy)), size)
    }

    /// The one connection of an in-memory database, shared by every caller in turn.
    pub(crate) fn memory(name: Arc<str>, only: Connection) -> Self {
        Self::new(name, only, None, 1)
    }

    fn new(
        name: Arc<str>,
        first: Connection,
        file: Option<(PathBuf, Duration)>,
        size: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                idle: Mutex::new(vec![first]),
                slots: Arc::new(Semaphore::new(size.max(1))),
                file,
            }),
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// Runs `f` on a connection, on a blocking thread.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = self.slot().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_connection(permit, f))
            .await
            .map_err(|e| StoreError::Backend {
                store: self.inner.name.to_string(),
                cause: format!("a database call did not finish: {e}"),
            })?
    }

    /// Runs `f` on a connection on this thread: for the writer of an in-memory database, whose
    /// transactions never wait for another process.
    pub(crate) async fn run_here<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let permit = self.slot().await?;
        self.inner.with_connection(permit, f)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, StoreError> {
        self.inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend {
                store: self.inner.name.to_string(),
                cause: "the store was closed".into(),
            })
    }

    /// Closes the idle connections; later calls fail.
    pub(crate) fn close(&self) {
        self.inner.slots.close();
        self.inner.idle().clear();
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the list was held cannot leave it half-changed: push and pop only.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_connection<T>(
        &self,
        permit: OwnedSemaphorePermit,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle().pop();
        let mut conn = match (idle, &self.file) {
            (Some(conn), _) => conn,
            (None, Some((path, busy))) => Connection::open(path)
                .and_then(|conn| settings(&conn, *busy).map(|()| conn))
                .map_err(|e| error(&self.name, e))?,
            (None, None) => {
                return Err(StoreError::Backend {
                    store: self.name.to_string(),
                    cause: "the in-memory database's connection was lost".into(),
                })
            }
        };
        let out = f(&mut conn).map_err(|e| error(&self.name, e));
        if !self.slots.is_closed() {
            self.idle().push(conn);
        }
        drop(permit);
        out
    }
}

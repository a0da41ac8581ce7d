//! The PostgreSQL backend, on a sqlx `PgPool`, for several hosts sharing one store. Its schema
//! is `migrations/`, embedded and run by `sqlx::migrate!` (which takes an advisory lock, so
//! workers starting at once do not race).
//!
//! Its files, by topic, are named as `sqlite/`'s are, so a new query touches the same-named
//! file in both:
//! - [`jobs`]: publish, look up, list, history, reset.
//! - [`counts`]: counts by filter, the kept counts, the run-time histogram.
//! - [`revokes`]: revoking jobs, and the revokes workers poll.
//! - [`leases`]: a long job's lease renewed, lapsed, claimed, and its job requeued.
//! - [`schedule`]: jobs held until their eta, and claimed when due.
//! - [`workflow`]: jobs waiting on others, the outbox, retries, a workflow's edges.
//! - [`columns`]: the `jobs` columns as sqlx binds, reads and filters them.
//! - [`commit`]: a worker's group commits, many rows to a statement.
//! - [`error`]: what sqlx's errors mean to a caller.

mod canvas;
mod columns;
mod commit;
mod controls;
mod counts;
mod error;
mod firings;
mod flow;
mod jobs;
mod leases;
mod options;
mod prune;
mod rates;
mod revokes;
mod schedule;
mod unique;
mod workflow;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, Postgres};

use super::StoreError;
pub(super) use commit::CommitWriter;
use error::{error, FIX, TLS_FIX};

/// How long opening waits for the server's answer (a pool waits as long for a connection).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections of a worker (one its group-commit writer keeps, the others for reads on
/// redeliveries, leases and revokes) and of a command or the web server.
const WORKER_CONNECTIONS: u32 = 3;
const CONNECTIONS: u32 = 8;

/// cm's transactions are a few statements sent back to back: one left idle this long has lost
/// its client (a host cut off mid-transaction, its COMMIT stuck in the network). The server then
/// ends it and frees its row locks, which would otherwise stall every other host's commit of
/// those jobs until TCP gives up (about 15 minutes).
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = '30s'";

/// A statement with its binds, as every file here builds them.
type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: PgPool,
    /// The URL as error messages show it: password hidden.
    name: Arc<str>,
}

impl Store {
    /// Connects and migrates the schema. The first connection is made alone, so that a
    /// refused one fails at once with its cause (a pool would retry until its timeout and then
    /// say only that); the pool's connections open when first needed.
    pub(crate) async fn open(url: &str, for_worker: bool) -> Result<Self, StoreError> {
        let name: Arc<str> = crate::config::urls::redact(url).into();
        let unreachable = |cause: String| StoreError::Unreachable {
            store: name.to_string(),
            cause,
            fix: FIX,
        };
        let options = options::connect_options(url).map_err(|cause| StoreError::Tls {
            store: name.to_string(),
            cause,
            fix: TLS_FIX,
        })?;
        let mut first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| match error(&name, e) {
                StoreError::Backend { cause, .. } => unreachable(cause),
                other => other,
            })?;
        // `run_direct`, not `run`: the same steps, without the `Acquire` bound that keeps the
        // future from being provably `Send` (sqlx's own workaround), so a worker can be spawned.
        sqlx::migrate!("src/store/postgres/migrations")
            .run_direct(&mut first)
            .await
            .map_err(|e| StoreError::Migration {
                store: name.to_string(),
                cause: e.to_string(),
            })?;
        // Closing politely is a courtesy to the server; the connection is done either way.
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(if for_worker {
                WORKER_CONNECTIONS
            } else {
                CONNECTIONS
            })
            // A SET, not a startup option: PgBouncer refuses startup options it does not know.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(IDLE_IN_TRANSACTION)
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy_with(options);
        Ok(Self { pool, name })
    }

    fn fail(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |e| error(&self.name, e)
    }

    pub(crate) fn commit_writer(&self) -> CommitWriter {
        CommitWriter::new(self.pool.clone(), self.name.clone())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;

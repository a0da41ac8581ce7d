//! The status store: every job's state and history, in SQLite (default) or PostgreSQL.
//!
//! This module is the API, its errors and the jobs' states; [`records`] holds the types callers
//! hand it and read back. Each backend is a module of its own with its own SQL and migrations,
//! in files by topic named alike in both: [`sqlite`] (rusqlite) and [`postgres`] (sqlx). What
//! their SQL shares is in [`sql`]; a call that says more than an id or two reaches them as one
//! of [`requests`]. Workers write through [`Writer`], which groups many events into one
//! transaction (group commit) and tells the caller when its event is durable; [`batch`]
//! decides, without SQL, what one commit writes.

mod batch;
mod postgres;
mod records;
mod requests;
mod sql;
mod sqlite;
#[cfg(test)]
mod testing;
mod writer;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::config::StoreLocation;
pub use records::{
    canvas_group, Counts, Duplicate, DurationHistogram, Event, EventRow, JobFilter, JobRow,
    JobSpec, MessageOptions, NewJob, Revoke, Revoked, SharedText, Spawned, UniqueClaim,
    UNIQUE_QUEUED, UNIQUE_UNFINISHED,
};
use requests::{Claim, Entry, First, Revoking, Scheduling};
pub(crate) use sql::{is_final_sql, job_columns, live_row};
pub use workflow::{Brief, Edge, Linked, Links, Parents, Tree, Waiting, WAITING_SHOWN};
pub use writer::{InFlight, Writer};

pub const PENDING: &str = "PENDING";
pub const RECEIVED: &str = "RECEIVED";
pub const STARTED: &str = "STARTED";
pub const SUCCESS: &str = "SUCCESS";
pub const FAILURE: &str = "FAILURE";
pub const RETRY: &str = "RETRY";
pub const REVOKED: &str = "REVOKED";
/// Received before its `eta`: held by the store, not the broker, until a worker's scheduler
/// publishes it again when due. Not final.
pub const SCHEDULED: &str = "SCHEDULED";
/// Published after other jobs (`--after`), not all of them ended as required yet: held by the
/// store, not the broker, and released (PENDING, then published from the outbox) by the
/// transaction of its last parent's end. Not final.
pub const WAITING: &str = "WAITING";
/// Over a rate limit or a concurrency key's slots ([`flow`]): held by the store, not the
/// broker, until a worker's releaser grants it a place and publishes it again. Not final.
pub const THROTTLED: &str = "THROTTLED";
/// Not a state: a history entry for a final job run again as a new job (`cm jobs retry`).
pub const RETRIED: &str = "RETRIED";
/// Not a state: a history entry for a redelivery of a job that was already final.
pub const REDELIVERED: &str = "REDELIVERED";
/// Not a state: a history entry for a worker's lease on a job it acked before the end.
pub const LEASED: &str = "LEASED";
/// Not a state: a history entry for a job whose lease lapsed and that was published again.
pub const REQUEUED: &str = "REQUEUED";

/// A job in one of these states will not change again; a redelivery of it is acked unrun, and
/// no later event of another run changes its `jobs` row (the first final state wins).
pub fn is_final(state: &str) -> bool {
    matches!(state, SUCCESS | FAILURE | REVOKED)
}

/// Whether `name` is one of cm's own states or history entries, which a job's own step (a
/// command's `cm-state: NAME` line) must not take: a step named SUCCESS would make the job
/// final before it ends.
pub fn is_cm_state(name: &str) -> bool {
    matches!(
        name,
        PENDING
            | RECEIVED
            | STARTED
            | SUCCESS
            | FAILURE
            | RETRY
            | REVOKED
            | SCHEDULED
            | WAITING
            | THROTTLED
            | RETRIED
            | REDELIVERED
            | LEASED
            | REQUEUED
    )
}

/// What went wrong, in the terms a caller acts on: `Unreachable` and `Busy` may pass (exit 69,
/// 75), the others need a person. Causes are kept as text so that one failed commit can be
/// told to every event that waited for it. `store` names the store, its password hidden.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("status store {store} is unreachable: {cause} ({fix})")]
    Unreachable {
        store: String,
        cause: String,
        /// What to check, for this kind of store.
        fix: &'static str,
    },
    /// The URL asks for TLS the server or its certificate cannot give (no TLS on the server,
    /// a certificate cm does not trust or that names another host, a file the URL names):
    /// a configuration to fix, never a reason to go on without TLS (exit 78).
    #[error("status store {store}: {cause} ({fix})")]
    Tls {
        store: String,
        cause: String,
        fix: &'static str,
    },
    /// Another connection held the lock longer than this one would wait.
    #[error("status store {store} is busy: {cause} (another process holds its lock: raise [store] busy_timeout_ms, or find what keeps the database locked)")]
    Busy { store: String, cause: String },
    #[error("status store {store}: migrating the schema: {cause} (is the database another program's, or a newer cm's?)")]
    Migration { store: String, cause: String },
    /// The filesystem under the store has no room left (SQLite's SQLITE_FULL, PostgreSQL's
    /// 53100): nothing can be written until space is freed. A worker keeps the job waiting,
    /// unacked, and tries again; a command fails with it (exit 75).
    #[error("status store {store}: the disk is full ({cause}); free space on the filesystem that holds it")]
    Full { store: String, cause: String },
    /// Any other error of the database or its driver (a constraint, a bug).
    #[error("status store {store}: {cause} (check its disk space and the database's own log)")]
    Backend { store: String, cause: String },
    /// The worker's group-commit writer is gone (the worker is shutting down).
    #[error("status store: the writer stopped: {0} (the worker is shutting down; its unacked jobs go back to the queue)")]
    WriterGone(String),
    /// What was asked cannot be done as asked (an unknown parent, a cycle, too many parents,
    /// a retry of a job that cannot be retried): nothing was changed. Exit 65.
    #[error("{0}")]
    Refused(String),
    #[error("status store: the history of job {id} is unreadable: a job_events row's `later` is not cm's JSON ({cause}); fix or delete that row")]
    BadHistory { id: String, cause: String },
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The status store; cheap to clone (every clone shares the connections).
#[derive(Debug, Clone)]
pub struct Store {
    location: StoreLocation,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// Runs the same call on whichever backend the store has.
macro_rules! on_backend {
    ($store:expr, $b:ident => $call:expr) => {
        match &$store.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

// Below the macro, which they use.
pub mod controls;
mod firings;
pub use firings::{Fired, Firing, FiringRow, Prune, ScheduleState, PRUNE_BATCH};
pub mod flow;
pub mod rates;
mod unique;
mod waiting;
pub mod workflow;

/// The SQLite busy timeout of a store opened with [`Store::open`].
const DEFAULT_BUSY: Duration = Duration::from_secs(10);

impl Store {
    /// Opens with the default SQLite busy timeout (10 s), for a command or the web server.
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with(location, DEFAULT_BUSY, false).await
    }

    /// Opens (creating an SQLite file and its folder on first use) and migrates the schema.
    /// `busy`: how long an SQLite write or read waits for another connection's lock before it
    /// fails. `for_worker`: few connections, as a worker process needs (memory counts there).
    pub async fn open_with(
        location: &StoreLocation,
        busy: Duration,
        for_worker: bool,
    ) -> Result<Self, StoreError> {
        let backend = match location {
            StoreLocation::SqliteFile(path) => {
                Backend::Sqlite(sqlite::Store::open_file(path, busy, for_worker).await?)
            }
            StoreLocation::SqliteMemory => Backend::Sqlite(sqlite::Store::open_memory().await?),
            StoreLocation::Postgres(url) => {
                Backend::Postgres(postgres::Store::open(url, for_worker).await?)
            }
        };
        Ok(Self {
            location: location.clone(),
            backend,
        })
    }

    /// Where this store is (its `Display` hides a password).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// A group-commit writer for this store (one per worker process). On an SQLite file it
    /// opens a connection of its own. A commit waits a moment for more events, unless `enough`
    /// of them already wait (a worker passes half its prefetch).
    pub fn writer(&self, enough: usize) -> Result<Writer, StoreError> {
        let linger = match &self.backend {
            Backend::Sqlite(_) => writer::LINGER,
            Backend::Postgres(_) => writer::LINGER_POSTGRES,
        };
        self.writer_with(enough, linger)
    }

    fn writer_with(&self, enough: usize, linger: Duration) -> Result<Writer, StoreError> {
        let sink = match &self.backend {
            Backend::Sqlite(s) => writer::Sink::Sqlite(s.commit_writer()?),
            Backend::Postgres(s) => writer::Sink::Postgres(s.commit_writer()),
        };
        Ok(Writer::spawn(sink, enough, linger))
    }

    /// Records published jobs as PENDING, in one transaction, before they are published.
    pub async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        on_backend!(self, b => b.insert_pending(jobs).await)
    }

    /// Takes back the PENDING records of a batch that could not be published.
    pub async fn delete_unpublished(&self, batch: &str) -> Result<u64, StoreError> {
        on_backend!(self, b => b.delete_unpublished(batch).await)
    }

    pub async fn state_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        on_backend!(self, b => b.state_of(id).await)
    }

    /// Up to `limit` ids that begin or end with `part` (a short id, as the web shows them).
    pub async fn ids_around(&self, part: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        on_backend!(self, b => b.ids_around(part, limit).await)
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        on_backend!(self, b => b.get(id).await)
    }

    /// Every event of job `id`, oldest first (each row's `later` steps unfolded after it).
    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        on_backend!(self, b => b.history(id).await)
    }

    /// Newest first; `filter.limit` 0 means no limit.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        on_backend!(self, b => b.list(filter).await)
    }

    /// How many jobs match `filter`. Unfiltered or by state alone, read off the counts the
    /// store keeps as jobs change (a few rows, whatever the history's size); with any other
    /// filter, counted.
    pub async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        match filter.kept_counts() {
            Some(state) => on_backend!(self, b => b.kept_count(state).await),
            None => on_backend!(self, b => b.count(filter).await),
        }
    }

    /// (state, count) for the jobs matching `filter`, states with no job left out. Kept
    /// counts, as for [`Store::count`], where the filter allows.
    pub async fn counts_by_state(&self, filter: &JobFilter) -> Result<Counts, StoreError> {
        match filter.kept_counts() {
            Some(state) => on_backend!(self, b => b.kept_counts_by_state(state).await),
            None => on_backend!(self, b => b.counts_by_state(filter).await),
        }
    }

    /// (worker node, jobs) over every job that has a worker, from the counts the store keeps.
    pub async fn counts_by_worker(&self) -> Result<Counts, StoreError> {
        on_backend!(self, b => b.counts_by_worker().await)
    }

    /// Jobs finished in each of the last `minutes` clock minutes, oldest first, the last the
    /// current minute so far: from counts the store keeps per minute, for a day (the last 1440).
    pub async fn finished_per_minute(&self, minutes: i64) -> Result<Vec<i64>, StoreError> {
        let first = now_ms() / 60_000 - (minutes - 1);
        let per_minute = on_backend!(self, b => b.finished_per_minute(first).await)?;
        let mut buckets = vec![0; usize::try_from(minutes).unwrap_or(0)];
        for (minute, n) in per_minute {
            if let Some(slot) = usize::try_from(minute - first)
                .ok()
                .and_then(|i| buckets.get_mut(i))
            {
                *slot += n;
            }
        }
        Ok(buckets)
    }

    /// Run times of finished jobs for `/metrics`, computed by the database (never by loading
    /// the rows): one aggregate query.
    pub async fn duration_histogram(
        &self,
        bounds_ms: &[i64],
    ) -> Result<DurationHistogram, StoreError> {
        let columns = on_backend!(self, b => b.run_times(bounds_ms).await)?;
        Ok(DurationHistogram::from_columns(bounds_ms, &columns))
    }

    /// Revokes `ids`, for every worker and across restarts: each is kept in `revokes` (a second
    /// revoke with `terminate` upgrades it, and is announced again). A job still PENDING, RETRY
    /// SCHEDULED, WAITING or THROTTLED becomes REVOKED at once; one that a worker holds (RECEIVED, STARTED, a step) keeps
    /// its state until that worker ends it; a final one is left as it is. One answer per
    /// distinct id, in the order given. `by` names who revoked (a node, `cm@host`).
    pub async fn revoke(
        &self,
        ids: &[String],
        terminate: bool,
        signal: Option<&str>,
        by: &str,
    ) -> Result<Vec<Revoked>, StoreError> {
        let revoking = Revoking::new(distinct(ids), terminate, signal, by, now_ms());
        on_backend!(self, b => b.revoke(&revoking).await)
    }

    /// The newest `limit` revokes made (or upgraded) after `after_ms`, oldest first: a worker
    /// keeps only so many in memory, so it never reads the whole table as it starts. Each
    /// revoke's time is its maker's clock, and two makers can commit out of that order: a
    /// poller asks from a little before the newest it has seen and ignores the ids it knows.
    pub async fn revokes_since(
        &self,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<Revoke>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_backend!(self, b => b.revokes_since(after_ms, limit).await)
    }

    /// Records job `job`, received by `worker` before its `options.eta_ms`, as SCHEDULED with its
    /// options (a row already final is left as it is), with a SCHEDULED history row. Once this
    /// returns, the store holds the job and its message may be acked.
    pub async fn schedule(
        &self,
        job: &NewJob,
        options: &MessageOptions,
        worker: &str,
    ) -> Result<(), StoreError> {
        let scheduling = Scheduling {
            job: job.clone(),
            options: options.clone(),
            entry: Entry {
                job_id: job.id.clone(),
                worker: worker.to_string(),
                at_ms: now_ms(),
                detail: format!(
                    "eta {}",
                    options.eta_ms.map_or_else(|| "none".into(), rfc3339_ms)
                ),
            },
        };
        on_backend!(self, b => b.schedule(&scheduling).await)
    }

    /// Claims the SCHEDULED jobs of `queue` due at `now_ms` (eta reached) and not claimed yet,
    /// earliest first, at most `limit`, for `owner` until `until_ms` (the lease columns), in one
    /// statement: of schedulers racing for a job, exactly one gets it. The claimer publishes
    /// each again and records it with [`Store::requeued`]; should it die first, its claim
    /// lapses and a lease reaper publishes the job instead.
    pub async fn claim_due(
        &self,
        queue: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let first = First {
            queue: queue.to_string(),
            limit: limit.max(1),
        };
        let claim = Claim {
            owner: owner.to_string(),
            now_ms,
            until_ms,
        };
        on_backend!(self, b => b.claim_due(&first, &claim).await)
    }

    /// Moves the leases `owner` still holds on `ids` to `until_ms`; returns how many it holds
    /// (a job that ended, or whose lease another took, is not renewed).
    pub async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let claim = Claim {
            owner: owner.to_string(),
            now_ms: now_ms(),
            until_ms,
        };
        on_backend!(self, b => b.renew_leases(&distinct(ids), &claim).await)
    }

    /// Jobs of `queue` not final whose lease ended before `now_ms`, longest lapsed first, at
    /// most `limit` (0: no limit).
    pub async fn lapsed_leases(
        &self,
        queue: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let first = First {
            queue: queue.to_string(),
            limit,
        };
        on_backend!(self, b => b.lapsed_leases(&first, now_ms).await)
    }

    /// Takes the lapsed lease of job `id` for `owner` until `until_ms`, in one statement: of
    /// reapers racing for it, exactly one gets `true`. False when it is not lapsed (any more),
    /// is final, or is gone.
    pub async fn claim_lapsed(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let claim = Claim {
            owner: owner.to_string(),
            now_ms,
            until_ms,
        };
        on_backend!(self, b => b.claim_lapsed(id, &claim).await)
    }

    /// Records that `by`, which claimed job `id`'s lapsed lease, published it again: the lease
    /// cleared and the job PENDING, unless it is final or `by` no longer holds it (the message
    /// was already received again: that run's row stays); a REQUEUED history row either way.
    pub async fn requeued(&self, id: &str, by: &str, detail: &str) -> Result<(), StoreError> {
        let entry = Entry {
            job_id: id.to_string(),
            worker: by.to_string(),
            at_ms: now_ms(),
            detail: detail.to_string(),
        };
        on_backend!(self, b => b.requeued(&entry).await)
    }

    /// Deletes every job and its history; returns how many jobs were removed.
    pub async fn reset(&self) -> Result<u64, StoreError> {
        on_backend!(self, b => b.reset().await)
    }

    pub async fn close(&self) {
        on_backend!(self, b => b.close().await)
    }
}

/// `ids` without repeats, in order of first appearance.
fn distinct(ids: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// A time in ms since the epoch as RFC 3339 (UTC, to the millisecond), for history details.
fn rfc3339_ms(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests;

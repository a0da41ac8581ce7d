//! The status store: every job's state and history, in SQLite (default) or PostgreSQL.
//!
//! One API over `sqlx::Any`; the SQL is written once (`$N` placeholders work on both backends;
//! the multi-row statements take theirs from [`params`]),
//! migrations are embedded per backend. Workers write through [`Writer`], which groups many
//! events into one transaction (group commit) and tells the caller when its event is durable;
//! [`plan`] turns a batch into statements, which run on sqlx or, for an SQLite file, on the
//! writer's own rusqlite connection ([`sqlite`]).

mod metrics;
mod params;
mod plan;
mod sqlite;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use crate::config::StoreLocation;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use metrics::DurationHistogram;
pub use writer::Writer;

pub const PENDING: &str = "PENDING";
pub const RECEIVED: &str = "RECEIVED";
pub const STARTED: &str = "STARTED";
pub const SUCCESS: &str = "SUCCESS";
pub const FAILURE: &str = "FAILURE";
pub const RETRY: &str = "RETRY";
pub const REVOKED: &str = "REVOKED";
/// Not a state: a history entry for a redelivery of a job that was already final.
pub const REDELIVERED: &str = "REDELIVERED";

/// A job in one of these states will not change again; a redelivery of it is acked unrun.
pub fn is_final(state: &str) -> bool {
    matches!(state, SUCCESS | FAILURE | REVOKED)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("status store {url} is unreachable: {cause} (start the database, or fix [store] url)")]
    Unreachable { url: String, cause: sqlx::Error },
    #[error("status store {url}: migrating the schema: {cause}")]
    Migrate {
        url: String,
        cause: sqlx::migrate::MigrateError,
    },
    #[error("status store: {0}")]
    Query(sqlx::Error),
    #[error("status store: the writer stopped: {0}")]
    WriterGone(String),
    #[error("status store {path}: opening the worker's write connection: {cause} (check that the file and its folder are writable)")]
    WriterOpen {
        path: String,
        cause: rusqlite::Error,
    },
    #[error("status store: {0}")]
    Sqlite(rusqlite::Error),
    #[error("status store: the history of job {id} is unreadable: a job_events row's `later` is not cm's JSON ({cause}); fix or delete that row")]
    BadHistory { id: String, cause: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Query(e)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What is known of a job when it is published (or first received from a Celery client).
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub id: String,
    pub task: String,
    pub queue: String,
    /// `[args, kwargs]` as JSON.
    pub args: String,
    pub server: Option<String>,
    pub recipe: Option<String>,
    pub kind: Option<String>,
    pub hosts: Option<String>,
    /// All jobs published by one command or one form submission share a batch id.
    pub batch: Option<String>,
    pub submitted_ms: i64,
}

/// Text a job's events share: its id, the worker's node name. Cloned into each of a job's six
/// events without a copy (a `String` each was 12 allocations per job, callgrind).
pub type Shared = std::sync::Arc<str>;

/// One state transition, as a worker reports it.
#[derive(Debug, Clone)]
pub enum Event {
    Received {
        job: NewJob,
        worker: Shared,
        at: i64,
    },
    State {
        id: Shared,
        state: &'static str,
        worker: Shared,
        at: i64,
    },
    Finished {
        id: Shared,
        state: &'static str,
        worker: Shared,
        at: i64,
        result: Option<String>,
        error: Option<String>,
    },
    Retry {
        id: Shared,
        worker: Shared,
        at: i64,
        error: String,
        retries: i64,
    },
    /// A redelivery of a job that is already final: counted, recorded, not run again.
    Redelivered {
        id: Shared,
        state: String,
        worker: Shared,
        at: i64,
    },
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub task: String,
    pub queue: String,
    pub args: String,
    pub server: Option<String>,
    pub recipe: Option<String>,
    pub kind: Option<String>,
    pub hosts: Option<String>,
    pub batch: Option<String>,
    pub state: String,
    pub worker: Option<String>,
    pub submitted_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub deliveries: i64,
    pub retries: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub state: String,
    pub worker: Option<String>,
    pub at_ms: i64,
    pub detail: Option<String>,
}

/// A `job_events` row as stored: its event, then the `later` ones folded into it (see
/// [`plan::history`]).
#[derive(sqlx::FromRow)]
struct HistoryRow {
    state: String,
    worker: Option<String>,
    at_ms: i64,
    detail: Option<String>,
    later: Option<String>,
}

/// One entry of a history row's `later` JSON: state, at_ms, detail.
type LaterStep = (String, i64, Option<String>);

/// Which jobs to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<String>,
    pub server: Option<String>,
    pub recipe: Option<String>,
    pub batch: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

const JOB_COLUMNS: &str =
    "id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, \
    submitted_ms, started_ms, finished_ms, result, error, deliveries, retries";

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    url: String,
    /// The database file, when the store is an SQLite file (the worker's writer opens its own
    /// connection to it, see [`sqlite`]).
    sqlite_file: Option<PathBuf>,
    busy: std::time::Duration,
}

impl Store {
    /// Opens with the default SQLite busy timeout (10 s).
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with(location, std::time::Duration::from_secs(10), false).await
    }

    /// Opens (creating an SQLite file and its folder on first use) and migrates the schema.
    /// `busy`: how long an SQLite writer waits for a lock before the write fails.
    /// `for_worker`: a small pool, as a worker process needs (memory counts there).
    pub async fn open_with(
        location: &StoreLocation,
        busy: std::time::Duration,
        for_worker: bool,
    ) -> Result<Self, StoreError> {
        let url = &match location {
            StoreLocation::SqliteFile(path) => format!("sqlite://{}", path.display()),
            StoreLocation::SqliteMemory => "sqlite::memory:".to_string(),
            StoreLocation::Postgres(url) => url.clone(),
        };
        let busy_ms = busy.as_millis();
        sqlx::any::install_default_drivers();
        let unreachable = |cause| StoreError::Unreachable {
            url: redact(url),
            cause,
        };
        let sqlite = url.starts_with("sqlite:");
        let mut migrate_lock = None;
        let mut sqlite_file = None;
        let connect_url = if sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| unreachable(sqlx::Error::Io(e)))?;
            }
            if !path.starts_with(":memory:") && !url.contains("mode=memory") {
                sqlite_file = Some(PathBuf::from(path));
            }
            // sqlx takes no lock for SQLite migrations; four workers starting at once would race.
            migrate_lock = Some(
                lock_file(&format!("{path}.migrate-lock"))
                    .map_err(|e| unreachable(sqlx::Error::Io(e)))?,
            );
            if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            }
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match (for_worker, sqlite) {
                // A worker writes through one group-commit writer and reads on redeliveries.
                (true, _) => 2,
                (false, true) => 4,
                (false, false) => 8,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers never block the writer; NORMAL is durable across process
                        // crashes, which is what a worker's ack depends on.
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {busy_ms};"
                        );
                        conn.execute(pragmas.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(unreachable)?;
        let migrator = if sqlite {
            sqlx::migrate!("migrations/sqlite")
        } else {
            sqlx::migrate!("migrations/postgres")
        };
        migrator
            .run(&pool)
            .await
            .map_err(|cause| StoreError::Migrate {
                url: redact(url),
                cause,
            })?;
        drop(migrate_lock);
        Ok(Self {
            pool,
            url: url.to_string(),
            sqlite_file,
            busy,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A group-commit writer for this store (one per worker process). On an SQLite file it
    /// opens a connection of its own. A commit waits a moment for more events, unless `enough`
    /// of them already wait (a worker passes half its prefetch).
    pub fn writer(&self, enough: usize) -> Result<Writer, StoreError> {
        self.writer_with(enough, writer::LINGER)
    }

    fn writer_with(
        &self,
        enough: usize,
        linger: std::time::Duration,
    ) -> Result<Writer, StoreError> {
        let sink = match &self.sqlite_file {
            Some(path) => writer::Sink::Sqlite(sqlite::Connection::open(path, self.busy).map_err(
                |cause| StoreError::WriterOpen {
                    path: path.display().to_string(),
                    cause,
                },
            )?),
            None => writer::Sink::Pool(self.pool.clone()),
        };
        Ok(Writer::spawn(sink, enough, linger))
    }

    /// Records published jobs as PENDING, in one transaction, before they are published.
    pub async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sqlite = tx.backend_name() == "SQLite";
        let mut statements = Vec::new();
        plan::pending(jobs, sqlite, &mut statements);
        let nobody = Shared::from("");
        let pending: Vec<Event> = jobs
            .iter()
            .map(|job| Event::State {
                id: job.id.as_str().into(),
                state: PENDING,
                worker: nobody.clone(),
                at: job.submitted_ms,
            })
            .collect();
        plan::history(&pending.iter().collect::<Vec<_>>(), sqlite, &mut statements);
        run_sqlx(&mut tx, &statements).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes back the PENDING records of a batch that could not be published.
    pub async fn delete_unpublished(&self, batch: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE batch = $1 AND state = 'PENDING')",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM jobs WHERE batch = $1 AND state = 'PENDING'")
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub async fn state_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r: AnyRow| r.get::<String, _>(0)))
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        Ok(sqlx::query_as::<_, JobRow>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every event of job `id`, oldest first (each row's `later` steps unfolded after it).
    pub async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query_as::<_, HistoryRow>(
            "SELECT state, worker, at_ms, detail, later FROM job_events WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let later = match &row.later {
                Some(json) => serde_json::from_str::<Vec<LaterStep>>(json).map_err(|e| {
                    StoreError::BadHistory {
                        id: id.to_string(),
                        cause: e.to_string(),
                    }
                })?,
                None => Vec::new(),
            };
            let worker = row.worker;
            out.push(EventRow {
                state: row.state,
                worker: worker.clone(),
                at_ms: row.at_ms,
                detail: row.detail,
            });
            out.extend(later.into_iter().map(|(state, at_ms, detail)| EventRow {
                state,
                worker: worker.clone(),
                at_ms,
                detail,
            }));
        }
        Ok(out)
    }

    /// Newest first; `filter.limit` 0 means no limit.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let limit = if filter.limit > 0 {
            filter.limit
        } else {
            i64::MAX
        };
        let n = binds.len();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs{clause} ORDER BY submitted_ms DESC, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut q = sqlx::query_as::<_, JobRow>(&sql);
        for b in binds {
            q = q.bind(b);
        }
        Ok(q.bind(limit)
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM jobs{clause}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        Ok(q.fetch_one(&self.pool).await?.get::<i64, _>(0))
    }

    /// (state, count) for the jobs matching `filter`, states with no job left out.
    pub async fn counts_by_state(
        &self,
        filter: &JobFilter,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT state, COUNT(*) FROM jobs{clause} GROUP BY state ORDER BY state");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    /// (worker node, finished jobs) over every job that has a worker.
    pub async fn counts_by_worker(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker, COUNT(*) FROM jobs WHERE worker IS NOT NULL GROUP BY worker ORDER BY worker",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect())
    }

    /// Jobs finished in each of the last `minutes` minutes, oldest first.
    pub async fn finished_per_minute(&self, minutes: i64) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        let since = now - minutes * 60_000;
        let rows = sqlx::query(
            "SELECT (finished_ms - $1) / 60000, COUNT(*) FROM jobs WHERE finished_ms >= $1 GROUP BY 1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut buckets = vec![0; usize::try_from(minutes).unwrap_or(0)];
        for r in rows {
            let i = r.get::<i64, _>(0);
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) {
                *slot += r.get::<i64, _>(1);
            }
        }
        Ok(buckets)
    }

    /// Deletes every job and its history; returns how many jobs were removed.
    pub async fn reset(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM job_events")
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM jobs").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn lock_file(path: &str) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

fn where_clause(f: &JobFilter) -> (String, Vec<String>) {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    for (column, value) in [
        ("state", &f.state),
        ("server", &f.server),
        ("recipe", &f.recipe),
        ("batch", &f.batch),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            binds.push(v.clone());
            parts.push(format!("{column} = ${}", binds.len()));
        }
    }
    if parts.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", parts.join(" AND ")), binds)
    }
}

/// Runs planned statements, in order, on a sqlx connection (inside the caller's transaction).
async fn run_sqlx(
    conn: &mut sqlx::AnyConnection,
    statements: &[plan::Statement<'_>],
) -> Result<(), sqlx::Error> {
    for st in statements {
        let mut q = sqlx::query(&st.sql);
        for arg in &st.args {
            q = match arg {
                plan::Arg::Text(s) => q.bind(s.as_ref()),
                plan::Arg::Int(n) => q.bind(*n),
                plan::Arg::Null => q.bind(None::<&str>),
            };
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The URL with any password hidden.
pub fn redact(url: &str) -> String {
    crate::broker::redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            task: "cm.launch".into(),
            queue: "q".into(),
            args: "[]".into(),
            batch: Some("b".into()),
            submitted_ms: 1,
            ..NewJob::default()
        }
    }

    fn run(id: &str) -> Vec<Event> {
        let w = Shared::from("l1@h");
        let state = |s: &'static str, at| Event::State {
            id: id.into(),
            state: s,
            worker: w.clone(),
            at,
        };
        vec![
            Event::Received {
                job: job(id),
                worker: w.clone(),
                at: 2,
            },
            state(STARTED, 3),
            state("running", 4),
            state("deploy", 5),
            Event::Finished {
                id: id.into(),
                state: SUCCESS,
                worker: w.clone(),
                at: 6,
                result: Some("{}".into()),
                error: None,
            },
        ]
    }

    /// A commit waits for company up to the linger, but not once `enough` commits wait.
    #[tokio::test]
    async fn a_commit_lingers_for_company_until_enough_commits_wait() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
        let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
        let events = run("a");

        let linger = std::time::Duration::from_millis(300);
        let alone = store.writer_with(2, linger)?;
        let t0 = std::time::Instant::now();
        alone.commit(events[0].clone()).await?;
        assert!(t0.elapsed() >= linger, "committed after {:?}", t0.elapsed());

        let long = std::time::Duration::from_secs(30);
        let pair = store.writer_with(2, long)?;
        let t0 = std::time::Instant::now();
        let (first, second) = tokio::join!(
            pair.commit(events[1].clone()),
            pair.commit(events[4].clone())
        );
        first?;
        second?;
        assert!(t0.elapsed() < long / 2, "waited {:?}", t0.elapsed());
        assert_eq!(store.get("a").await?.map(|r| r.state), Some(SUCCESS.into()));
        Ok(())
    }

    /// One batch (whole run, one upsert) and one event per batch (in order) leave the same row.
    #[tokio::test]
    async fn a_whole_run_in_one_batch_leaves_the_row_that_event_by_event_does(
    ) -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
        let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
        store.insert_pending(&[job("a"), job("b")]).await?;
        let writer = store.writer(1)?;
        let mut batched = run("a");
        let last = batched
            .pop()
            .ok_or(StoreError::WriterGone("empty".into()))?;
        for ev in batched {
            writer.send(ev);
        }
        writer.commit(last).await?;
        for ev in run("b") {
            writer.commit(ev).await?;
        }
        let (a, b) = (store.get("a").await?, store.get("b").await?);
        let (Some(a), Some(b)) = (a, b) else {
            panic!("rows missing")
        };
        assert_eq!(
            (
                a.state.as_str(),
                a.worker.as_deref(),
                a.started_ms,
                a.finished_ms,
                a.deliveries,
                a.result.as_deref()
            ),
            (
                b.state.as_str(),
                b.worker.as_deref(),
                b.started_ms,
                b.finished_ms,
                b.deliveries,
                b.result.as_deref()
            )
        );
        assert_eq!(
            (a.state.as_str(), a.deliveries, a.started_ms),
            (SUCCESS, 1, Some(3))
        );
        let events = |h: Vec<EventRow>| {
            h.into_iter()
                .map(|e| (e.state, e.worker, e.at_ms, e.detail))
                .collect::<Vec<_>>()
        };
        let history_a = events(store.history("a").await?);
        assert_eq!(history_a, events(store.history("b").await?));
        let states: Vec<&str> = history_a.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            states,
            [PENDING, RECEIVED, STARTED, "running", "deploy", SUCCESS]
        );
        // a's run went in one commit, so one row holds it; b's took a commit per event.
        let rows = |id: &'static str| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_events WHERE job_id = $1")
                .bind(id)
                .fetch_one(&store.pool)
        };
        assert_eq!((rows("a").await?, rows("b").await?), (2, 6));
        Ok(())
    }

    /// A `later` column cm did not write is refused by name, not skipped.
    #[tokio::test]
    async fn an_unreadable_history_row_names_its_job() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Query(sqlx::Error::Io(e)))?;
        let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
        sqlx::query(
            "INSERT INTO job_events (job_id, state, at_ms, later) VALUES ('x', 'PENDING', 1, '{')",
        )
        .execute(&store.pool)
        .await?;
        let err = store.history("x").await.err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("history of job x is unreadable")),
            "{err:?}"
        );
        Ok(())
    }
}

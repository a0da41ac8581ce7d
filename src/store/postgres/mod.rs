//! The PostgreSQL backend, on a sqlx `PgPool`, for several hosts sharing one store. Its schema
//! is `migrations/`, embedded and run by `sqlx::migrate!` (which takes an advisory lock, so
//! workers starting at once do not race).
//!
//! Longer than our usual ~400 lines on purpose: it is every query of this backend, one short
//! method per `Store` call, in the order of `store/mod.rs`, mirroring `sqlite/mod.rs`.

mod commit;

use std::sync::Arc;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};

use super::batch::{self, FoldedHistory};
use super::{
    is_final_sql, live_row, DurationHistogram, EventRow, JobFilter, JobRow, MessageOptions, NewJob,
    Revoke, Revoked, StoreError, PENDING, REVOKED, SUCCESS,
};
pub(super) use commit::CommitWriter;

/// The `jobs` columns in [`JobRow`]'s order (a macro, so that statements can `concat!` it).
macro_rules! job_columns {
    () => {
        "id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, \
         submitted_ms, started_ms, finished_ms, result, error, deliveries, retries, output, \
         lease_owner, lease_until, eta_ms, expires_ms, time_limit_ms, soft_time_limit_ms, \
         reply_to"
    };
}

/// What to check when the database cannot be reached.
const FIX: &str = "start the database, or fix [store] url";

/// How long opening waits for the server's answer (a pool waits as long for a connection).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections of a worker (one its group-commit writer keeps, the others for reads on
/// redeliveries, leases and revokes) and of a command or the web server.
const WORKER_CONNECTIONS: u32 = 3;
const CONNECTIONS: u32 = 8;

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: PgPool,
    /// The URL as error messages show it: password hidden.
    name: Arc<str>,
}

/// SQLSTATEs of a lock not had in time (55P03), a deadlock (40P01) and a serialization failure
/// (40001): the same work can succeed when tried again.
const BUSY_CODES: [&str; 3] = ["55P03", "40P01", "40001"];

/// cm's transactions are a few statements sent back to back: one left idle this long has lost
/// its client (a host cut off mid-transaction, its COMMIT stuck in the network). The server then
/// ends it and frees its row locks, which would otherwise stall every other host's commit of
/// those jobs until TCP gives up (about 15 minutes).
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = '30s'";

/// SQLSTATE disk_full: the server could not extend a file.
const DISK_FULL: &str = "53100";

/// The database gone (class 08: connection exceptions; 57P01, 57P03: shut down, starting up).
fn is_connection_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

pub(super) fn error(store: &str, e: sqlx::Error) -> StoreError {
    let store = store.to_string();
    let code = match &e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    match (&e, code.as_deref()) {
        (
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed,
            _,
        ) => StoreError::Unreachable {
            store,
            cause: e.to_string(),
            fix: FIX,
        },
        (_, Some(c)) if is_connection_code(c) => StoreError::Unreachable {
            store,
            cause: e.to_string(),
            fix: FIX,
        },
        (_, Some(c)) if BUSY_CODES.contains(&c) => StoreError::Busy {
            store,
            cause: e.to_string(),
        },
        (_, Some(DISK_FULL)) => StoreError::Full {
            store,
            cause: e.to_string(),
        },
        _ => StoreError::Backend {
            store,
            cause: e.to_string(),
        },
    }
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
        let options = PgConnectOptions::from_str(url).map_err(|e| unreachable(e.to_string()))?;
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

    pub(crate) async fn insert_pending(&self, jobs: &[NewJob]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.fail())?;
        commit::insert_pending(&mut tx, jobs)
            .await
            .map_err(self.fail())?;
        commit::insert_history(&mut tx, &batch::published(jobs))
            .await
            .map_err(self.fail())?;
        tx.commit().await.map_err(self.fail())
    }

    pub(crate) async fn delete_unpublished(&self, batch: &str) -> Result<u64, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM job_events WHERE job_id IN \
                 (SELECT id FROM jobs WHERE batch = $1 AND state = 'PENDING')",
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
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn state_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.fail())
    }

    /// Up to `limit` ids that begin or end with `part`, in order.
    pub(crate) async fn ids_around(
        &self,
        part: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE starts_with(id, $1) OR right(id, char_length($1)) = $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(part)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.fail())?;
        row.as_ref().map(job_row).transpose().map_err(self.fail())
    }

    pub(crate) async fn history(&self, id: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, worker, at_ms, detail, later FROM job_events \
             WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let first = EventRow {
                state: r.try_get(0).map_err(self.fail())?,
                worker: r.try_get(1).map_err(self.fail())?,
                at_ms: r.try_get(2).map_err(self.fail())?,
                detail: r.try_get(3).map_err(self.fail())?,
            };
            let later: Option<String> = r.try_get(4).map_err(self.fail())?;
            batch::unfold(id, first, later.as_deref(), &mut out)?;
        }
        Ok(out)
    }

    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        // PENDING and SUCCESS have no index (see `where_clause`): by one of them alone, the
        // kept count says when no row is left to find, which a scan would read every row for.
        if let Some(Some(state @ (PENDING | SUCCESS))) = filter.kept_counts() {
            if self.kept_count(Some(state)).await? <= filter.offset {
                return Ok(Vec::new());
            }
        }
        let (clause, binds) = where_clause(filter);
        let limit = if filter.limit > 0 {
            filter.limit
        } else {
            i64::MAX
        };
        let n = binds.len();
        let sql = format!(
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs{} ORDER BY submitted_ms DESC, id LIMIT ${} OFFSET ${}"
            ),
            clause,
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(limit)
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await
            .map_err(self.fail())?;
        rows.iter()
            .map(job_row)
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }

    pub(crate) async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM jobs{clause}");
        let mut q = sqlx::query_scalar(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_one(&self.pool).await.map_err(self.fail())
    }

    pub(crate) async fn counts_by_state(
        &self,
        filter: &JobFilter,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT state, COUNT(*) FROM jobs{clause} GROUP BY state ORDER BY state");
        let mut q = sqlx::query_as(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool).await.map_err(self.fail())
    }

    /// The kept counts (see migration 0006: each is the sum of its rows, folded or not), of
    /// `state` alone or of every state.
    pub(crate) async fn kept_count(&self, state: Option<&str>) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_state_counts \
             WHERE $1::TEXT IS NULL OR state = $1",
        )
        .bind(state)
        .fetch_one(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn kept_counts_by_state(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT state, CAST(SUM(n) AS BIGINT) FROM job_state_counts \
             WHERE $1::TEXT IS NULL OR state = $1 GROUP BY state HAVING SUM(n) > 0 ORDER BY state",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn counts_by_worker(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT worker, CAST(SUM(n) AS BIGINT) FROM job_worker_counts \
             GROUP BY worker HAVING SUM(n) > 0 ORDER BY worker",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    /// (clock minute, jobs finished in it) from minute `first` on, for the minutes that have any.
    pub(crate) async fn finished_per_minute(
        &self,
        first: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT minute, CAST(SUM(n) AS BIGINT) FROM job_finished_minutes \
             WHERE minute >= $1 GROUP BY minute HAVING SUM(n) > 0",
        )
        .bind(first)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn duration_histogram(
        &self,
        bounds_ms: &[i64],
    ) -> Result<DurationHistogram, StoreError> {
        let buckets: String = (1..=bounds_ms.len())
            .map(|i| format!(", COUNT(*) FILTER (WHERE finished_ms - started_ms <= ${i})"))
            .collect();
        // SUM of a BIGINT is NUMERIC: cast back, so that every column is an i64.
        let sql = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(finished_ms - started_ms), 0) AS BIGINT){buckets} \
             FROM jobs WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL"
        );
        let mut q = sqlx::query(&sql);
        for b in bounds_ms {
            q = q.bind(*b);
        }
        let row = q.fetch_one(&self.pool).await.map_err(self.fail())?;
        let at_most = bounds_ms
            .iter()
            .enumerate()
            .map(|(i, b)| Ok((*b, row.try_get::<i64, _>(i + 2)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(self.fail())?;
        Ok(DurationHistogram {
            at_most,
            count: row.try_get(0).map_err(self.fail())?,
            sum_ms: row.try_get(1).map_err(self.fail())?,
        })
    }

    pub(crate) async fn revoke(
        &self,
        ids: &[String],
        terminate: bool,
        signal: Option<&str>,
        by: &str,
        now: i64,
    ) -> Result<Vec<Revoked>, StoreError> {
        let why = format!("revoked by {by}");
        let run = async {
            let mut tx = self.pool.begin().await?;
            // A repeat without terminate changes nothing; one with it upgrades the revoke and
            // moves it past its old time, so that pollers see it again.
            sqlx::query(
                "INSERT INTO revokes (id, at_ms, terminate, signal, by) \
                 SELECT id, $2, $3, $4, $5 FROM UNNEST($1::text[]) AS r(id) \
                 ON CONFLICT (id) DO UPDATE SET \
                 at_ms = GREATEST(excluded.at_ms, revokes.at_ms + 1), terminate = TRUE, \
                 signal = excluded.signal, by = excluded.by WHERE excluded.terminate",
            )
            .bind(ids)
            .bind(now)
            .bind(terminate)
            .bind(signal)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            // Not yet (or no longer) any worker's: those end here.
            let ended: Vec<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'REVOKED', finished_ms = $2, error = $3, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY($1) AND state IN ('PENDING', 'RETRY', 'SCHEDULED') RETURNING id",
            )
            .bind(ids)
            .bind(now)
            .bind(&why)
            .fetch_all(&mut *tx)
            .await?;
            let history: Vec<FoldedHistory<'_>> = ended
                .iter()
                .map(|id| FoldedHistory {
                    job_id: id,
                    state: REVOKED,
                    worker: by,
                    at_ms: now,
                    detail: Some(why.as_str().into()),
                    later: None,
                })
                .collect();
            commit::insert_history(&mut tx, &history).await?;
            let states: Vec<(String, String)> =
                sqlx::query_as("SELECT id, state FROM jobs WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            let mut states: std::collections::HashMap<String, String> =
                states.into_iter().collect();
            Ok(ids
                .iter()
                .map(|id| Revoked {
                    id: id.clone(),
                    state: states.remove(id),
                })
                .collect())
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn revokes_since(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<Revoke>, StoreError> {
        // id, at_ms, terminate, signal, by
        type Row = (String, i64, bool, Option<String>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT * FROM (SELECT id, at_ms, terminate, signal, by FROM revokes \
             WHERE at_ms > $1 ORDER BY at_ms DESC, id DESC LIMIT $2) AS newest \
             ORDER BY at_ms, id",
        )
        .bind(after_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(rows
            .into_iter()
            .map(|(id, at_ms, terminate, signal, by)| Revoke {
                id,
                at_ms,
                terminate,
                signal,
                by,
            })
            .collect())
    }

    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE jobs SET lease_until = $1 \
             WHERE id = ANY($2) AND lease_owner = $3 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(until_ms)
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn lapsed_leases(
        &self,
        queue: &str,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let limit = if limit > 0 { limit } else { i64::MAX };
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE lease_until < $1 AND queue = $2 AND NOT ",
            is_final_sql!("state"),
            " ORDER BY lease_until, id LIMIT $3"
        ))
        .bind(now_ms)
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        rows.iter()
            .map(job_row)
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }

    pub(crate) async fn claim_lapsed(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        // One UPDATE: a racing claim waits for this row's lock, then finds the lease taken.
        let done = sqlx::query(concat!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 \
             WHERE id = $3 AND lease_until < $4 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(owner)
        .bind(until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn schedule(
        &self,
        job: &NewJob,
        o: &MessageOptions,
        worker: &str,
        now: i64,
        detail: &str,
    ) -> Result<(), StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let changed = sqlx::query(concat!(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
                 worker, submitted_ms, deliveries, eta_ms, expires_ms, time_limit_ms, \
                 soft_time_limit_ms, reply_to) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'SCHEDULED', $9, $10, 1, $11, $12, $13, \
                 $14, $15) \
                 ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                 state = 'SCHEDULED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
                 expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
                 soft_time_limit_ms = excluded.soft_time_limit_ms, reply_to = excluded.reply_to, \
                 lease_owner = NULL, lease_until = NULL",
                live_row!()
            ))
            .bind(&job.id)
            .bind(&job.task)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(&job.server)
            .bind(&job.recipe)
            .bind(&job.kind)
            .bind(&job.hosts)
            .bind(worker)
            .bind(job.submitted_ms)
            .bind(o.eta_ms)
            .bind(o.expires_ms)
            .bind(o.time_limit_ms)
            .bind(o.soft_time_limit_ms)
            .bind(&o.reply_to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                sqlx::query(
                    "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                     VALUES ($1, 'SCHEDULED', $2, $3, $4)",
                )
                .bind(&job.id)
                .bind(worker)
                .bind(now)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn claim_due(
        &self,
        queue: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        // One UPDATE: a racing claim waits for each row's lock, then re-checks the outer WHERE
        // against the committed row and finds it claimed (READ COMMITTED), so skips it.
        let rows = sqlx::query(concat!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT id FROM jobs WHERE unusual_state = 'SCHEDULED' AND queue = $3 \
             AND eta_ms <= $4 \
             AND lease_owner IS NULL ORDER BY eta_ms LIMIT $5) \
             AND state = 'SCHEDULED' AND lease_owner IS NULL RETURNING ",
            job_columns!()
        ))
        .bind(owner)
        .bind(until_ms)
        .bind(queue)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        rows.iter()
            .map(job_row)
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }

    pub(crate) async fn requeued(
        &self,
        id: &str,
        by: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(concat!(
                "UPDATE jobs SET state = 'PENDING', lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND lease_owner = $2 AND NOT ",
                is_final_sql!("state")
            ))
            .bind(id)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            // A job deleted meanwhile (db_reset) gets no history row of its own.
            sqlx::query(
                "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                 SELECT $1, 'REQUEUED', $2, $3, $4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1)",
            )
            .bind(id)
            .bind(by)
            .bind(now)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn reset(&self) -> Result<u64, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            // Every job goes, so every kept count is 0. A DELETE would hand all its rows to
            // the delete trigger to sum (reset of 1,000,000 jobs: 2.7 s, 0.7 s without the
            // trigger); TRUNCATE fires no row triggers and empties the tables at once. Its lock
            // waits for the transactions using `jobs` and keeps the others out until the
            // commit, so the count taken under it is what goes, and no change falls between.
            sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            let removed: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_state_counts",
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "TRUNCATE jobs, job_events, job_state_counts, job_worker_counts, \
                 job_finished_minutes",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(u64::try_from(removed).unwrap_or(0))
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

fn job_row(r: &PgRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get(0)?,
        task: r.try_get(1)?,
        queue: r.try_get(2)?,
        args: r.try_get(3)?,
        server: r.try_get(4)?,
        recipe: r.try_get(5)?,
        kind: r.try_get(6)?,
        hosts: r.try_get(7)?,
        batch: r.try_get(8)?,
        state: r.try_get(9)?,
        worker: r.try_get(10)?,
        submitted_ms: r.try_get(11)?,
        started_ms: r.try_get(12)?,
        finished_ms: r.try_get(13)?,
        result: r.try_get(14)?,
        error: r.try_get(15)?,
        deliveries: r.try_get(16)?,
        retries: r.try_get(17)?,
        output: r.try_get(18)?,
        lease_owner: r.try_get(19)?,
        lease_until: r.try_get(20)?,
        options: MessageOptions {
            eta_ms: r.try_get(21)?,
            expires_ms: r.try_get(22)?,
            time_limit_ms: r.try_get(23)?,
            soft_time_limit_ms: r.try_get(24)?,
            reply_to: r.try_get(25)?,
        },
    })
}

/// ` WHERE column = $1 AND ...` for the filter's columns, and their values in order.
fn where_clause(filter: &JobFilter) -> (String, Vec<String>) {
    let (columns, binds): (Vec<String>, Vec<String>) = filter
        .columns()
        .enumerate()
        .map(|(i, (column, value))| {
            let column = match column {
                // Only `unusual_state` is indexed (migration 0009); the two states it leaves
                // out are the common ones, found soon in newest-first order.
                "state" if value != PENDING && value != SUCCESS => "unusual_state",
                other => other,
            };
            (format!("{column} = ${}", i + 1), value.to_string())
        })
        .unzip();
    if columns.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", columns.join(" AND ")), binds)
    }
}

#[cfg(test)]
mod tests;

//! A worker's group commits on PostgreSQL: the statements that write a [`Commit`].
//!
//! Many rows go in one statement as arrays, one per column, that `UNNEST` turns back into rows:
//! one statement text whatever the row count, so each is prepared once per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Acquire, PgConnection, Postgres};

use super::canvas;
use super::columns::bind_job;
use super::{error, PgQuery};
use crate::store::batch::{Commit, FoldedHistory, WholeRun};
use crate::store::{is_final_sql, live_row, Event, NewJob, StoreError, PENDING, STARTED, WAITING};

/// The upsert of whole runs, their columns the parameters $1 to $16 ([`RunColumns`]).
macro_rules! upsert_whole_runs_sql {
    () => {
        // lease_* are NULL in `excluded`: a finished run holds no lease.
        concat!(
            "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, worker, \
             submitted_ms, started_ms, finished_ms, result, error, output, deliveries) \
             SELECT *, 1 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], \
             $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[]) \
             ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
             state = excluded.state, worker = excluded.worker, started_ms = excluded.started_ms, \
             finished_ms = excluded.finished_ms, result = excluded.result, \
             error = excluded.error, output = excluded.output, lease_owner = NULL, \
             lease_until = NULL",
            live_row!()
        )
    };
}

/// The insert of history rows, their six columns ([`HistoryColumns`]) the parameters named.
/// WITH ORDINALITY ... ORDER BY: the rows take their `seq` in the commit's order.
macro_rules! insert_history_sql {
    ($job_id:literal, $state:literal, $worker:literal, $at:literal, $detail:literal, $later:literal) => {
        concat!(
            "INSERT INTO job_events (job_id, state, worker, at_ms, detail, later) \
             SELECT job_id, state, worker, at_ms, detail, later FROM UNNEST(",
            $job_id,
            "::text[], ",
            $state,
            "::text[], ",
            $worker,
            "::text[], ",
            $at,
            "::bigint[], ",
            $detail,
            "::text[], ",
            $later,
            "::text[]) WITH ORDINALITY \
             AS r(job_id, state, worker, at_ms, detail, later, n) ORDER BY n"
        )
    };
}

pub(crate) struct CommitWriter {
    pool: PgPool,
    name: Arc<str>,
    /// The last commit's connection and when that commit ended, kept for the next: the pool
    /// hands a connection out only after a ping, one more round trip per commit. Used again
    /// only within [`KEEP_FOR`]; otherwise, and after a failed commit, it goes back to the
    /// pool, whose ping finds a connection the server dropped meanwhile (a restart, an idle
    /// timeout) before a commit fails on it and its jobs go back to the queue.
    kept: Option<(PoolConnection<Postgres>, Instant)>,
}

/// How long after a commit its connection is used for the next without a ping: under load the
/// next commit comes within milliseconds.
pub(super) const KEEP_FOR: Duration = Duration::from_secs(1);

impl CommitWriter {
    pub(super) fn new(pool: PgPool, name: Arc<str>) -> Self {
        Self {
            pool,
            name,
            kept: None,
        }
    }

    /// Writes `commit` atomically. A commit of whole runs alone (a no-op job's usual commit) is
    /// one statement, its own transaction: one round trip to the server instead of four.
    pub(crate) async fn write(&mut self, commit: &Commit<'_>) -> Result<(), StoreError> {
        // A stale connection goes back to the pool before one is taken from it.
        let fresh = self
            .kept
            .take()
            .filter(|(_, ended)| ended.elapsed() < KEEP_FOR);
        let mut conn = match fresh {
            Some((conn, _)) => conn,
            None => self
                .pool
                .acquire()
                .await
                .map_err(|e| error(&self.name, e))?,
        };
        let written = if !commit.beyond_runs() {
            write_runs(&mut conn, &commit.whole_runs, &commit.history).await
        } else {
            write_in_transaction(&mut conn, commit).await
        };
        match written {
            Ok(()) => {
                self.kept = Some((conn, Instant::now()));
                Ok(())
            }
            Err(e) => Err(error(&self.name, e)),
        }
    }
}

async fn write_in_transaction(
    conn: &mut PgConnection,
    commit: &Commit<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for ev in &commit.updates {
        update(&mut tx, ev).await?;
    }
    upsert_whole_runs(&mut tx, &commit.whole_runs).await?;
    canvas::keep_options(&mut tx, &commit.options).await?;
    for spawn in &commit.spawns {
        canvas::insert_spawned(&mut tx, spawn).await?;
    }
    insert_history(&mut tx, &commit.history).await?;
    tx.commit().await
}

/// Whole runs and their history rows in one statement (the history insert's data-modifying
/// CTE runs whether or not the outer statement reads it).
async fn write_runs(
    conn: &mut PgConnection,
    runs: &[WholeRun<'_>],
    history: &[FoldedHistory<'_>],
) -> Result<(), sqlx::Error> {
    match (runs.is_empty(), history.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => upsert_whole_runs(conn, runs).await,
        (true, false) => insert_history(conn, history).await,
        (false, false) => {
            let q = sqlx::query(concat!(
                "WITH history AS (",
                insert_history_sql!("$17", "$18", "$19", "$20", "$21", "$22"),
                ") ",
                upsert_whole_runs_sql!()
            ));
            HistoryColumns::of(history)
                .bind(RunColumns::of(runs).bind(q))
                .execute(conn)
                .await
                .map(drop)
        }
    }
}

/// Applies one event to its job's `jobs` row (its history is written apart). A final row is
/// left as it is (the first final state wins), its `deliveries` too: another run shows in the
/// history alone.
async fn update(conn: &mut PgConnection, ev: &Event) -> Result<(), sqlx::Error> {
    let q = match ev {
        // A delivery starts with no lease: an older run's, or a reaper's claim, is over.
        Event::Received { job, worker, at } => {
            let q = sqlx::query(concat!(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
                 worker, submitted_ms, deliveries) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'RECEIVED', $9, $10, 1) \
                 ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                 state = 'RECEIVED', worker = excluded.worker, lease_owner = NULL, \
                 lease_until = NULL",
                live_row!()
            ));
            bind_job(q, job).bind(&**worker).bind(*at)
        }
        Event::State {
            id,
            state,
            worker,
            at,
        } if state == STARTED => sqlx::query(concat!(
            "UPDATE jobs SET state = $1, worker = $2, started_ms = $3 WHERE id = $4 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(&**state)
        .bind(&**worker)
        .bind(*at)
        .bind(&**id),
        Event::State { id, state, .. } => sqlx::query(concat!(
            "UPDATE jobs SET state = $1 WHERE id = $2 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(&**state)
        .bind(&**id),
        Event::Finished {
            id,
            state,
            worker,
            at,
            result,
            error,
            output,
            ..
        } => sqlx::query(concat!(
            "UPDATE jobs SET state = $1, worker = $2, finished_ms = $3, result = $4, error = $5, \
             output = $6, lease_owner = NULL, lease_until = NULL WHERE id = $7 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(*state)
        .bind(&**worker)
        .bind(*at)
        .bind(result)
        .bind(error)
        .bind(output)
        .bind(&**id),
        Event::Retry {
            id, error, retries, ..
        } => sqlx::query(concat!(
            "UPDATE jobs SET state = 'RETRY', error = $1, retries = $2, lease_owner = NULL, \
             lease_until = NULL WHERE id = $3 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(error)
        .bind(*retries)
        .bind(&**id),
        Event::Redelivered { id, .. } => {
            sqlx::query("UPDATE jobs SET deliveries = deliveries + 1 WHERE id = $1").bind(&**id)
        }
        // Only the giver's own hold ends: another worker may have received it meanwhile.
        Event::GivenBack { id, worker, .. } => sqlx::query(concat!(
            "UPDATE jobs SET state = 'PENDING' WHERE id = $1 AND worker = $2 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(&**id)
        .bind(&**worker),
        Event::Leased {
            id, worker, until, ..
        } => sqlx::query(concat!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id = $3 AND NOT ",
            is_final_sql!("state")
        ))
        .bind(&**worker)
        .bind(*until)
        .bind(&**id),
    };
    q.execute(conn).await.map(drop)
}

/// A new job's columns as arrays: id, task, queue, args, server, recipe, kind, hosts.
#[derive(Default)]
struct JobColumns<'a> {
    id: Vec<&'a str>,
    task: Vec<&'a str>,
    queue: Vec<&'a str>,
    args: Vec<&'a str>,
    server: Vec<Option<&'a str>>,
    recipe: Vec<Option<&'a str>>,
    kind: Vec<Option<&'a str>>,
    hosts: Vec<Option<&'a str>>,
}

impl<'a> JobColumns<'a> {
    fn push(&mut self, job: &'a NewJob) {
        self.id.push(&job.id);
        self.task.push(&job.task);
        self.queue.push(&job.queue);
        self.args.push(&job.args);
        self.server.push(job.server.as_deref());
        self.recipe.push(job.recipe.as_deref());
        self.kind.push(job.kind.as_deref());
        self.hosts.push(job.hosts.as_deref());
    }

    /// Binds the arrays as the statement's $1 to $8.
    fn bind<'q>(self, q: PgQuery<'q>) -> PgQuery<'q>
    where
        'a: 'q,
    {
        q.bind(self.id)
            .bind(self.task)
            .bind(self.queue)
            .bind(self.args)
            .bind(self.server)
            .bind(self.recipe)
            .bind(self.kind)
            .bind(self.hosts)
    }
}

/// Whole runs as arrays, the parameters $1 to $16 of [`upsert_whole_runs_sql`].
struct RunColumns<'a> {
    jobs: JobColumns<'a>,
    state: Vec<&'a str>,
    worker: Vec<&'a str>,
    received: Vec<i64>,
    started: Vec<i64>,
    finished: Vec<i64>,
    result: Vec<Option<&'a str>>,
    error: Vec<Option<&'a str>>,
    output: Vec<Option<&'a str>>,
}

impl<'a> RunColumns<'a> {
    fn of(runs: &'a [WholeRun<'a>]) -> Self {
        let mut c = Self {
            jobs: JobColumns::default(),
            state: Vec::with_capacity(runs.len()),
            worker: Vec::with_capacity(runs.len()),
            received: Vec::with_capacity(runs.len()),
            started: Vec::with_capacity(runs.len()),
            finished: Vec::with_capacity(runs.len()),
            result: Vec::with_capacity(runs.len()),
            error: Vec::with_capacity(runs.len()),
            output: Vec::with_capacity(runs.len()),
        };
        for r in runs {
            c.jobs.push(r.job);
            c.state.push(r.state);
            c.worker.push(r.worker);
            c.received.push(r.received_ms);
            c.started.push(r.started_ms);
            c.finished.push(r.finished_ms);
            c.result.push(r.result);
            c.error.push(r.error);
            c.output.push(r.output);
        }
        c
    }

    fn bind<'q>(self, q: PgQuery<'q>) -> PgQuery<'q>
    where
        'a: 'q,
    {
        self.jobs
            .bind(q)
            .bind(self.state)
            .bind(self.worker)
            .bind(self.received)
            .bind(self.started)
            .bind(self.finished)
            .bind(self.result)
            .bind(self.error)
            .bind(self.output)
    }
}

/// History rows as arrays, bound after whatever the statement binds first.
struct HistoryColumns<'a> {
    job_id: Vec<&'a str>,
    state: Vec<&'a str>,
    worker: Vec<&'a str>,
    at: Vec<i64>,
    detail: Vec<Option<&'a str>>,
    later: Vec<Option<&'a str>>,
}

impl<'a> HistoryColumns<'a> {
    fn of(rows: &'a [FoldedHistory<'a>]) -> Self {
        let mut c = Self {
            job_id: Vec::with_capacity(rows.len()),
            state: Vec::with_capacity(rows.len()),
            worker: Vec::with_capacity(rows.len()),
            at: Vec::with_capacity(rows.len()),
            detail: Vec::with_capacity(rows.len()),
            later: Vec::with_capacity(rows.len()),
        };
        for h in rows {
            c.job_id.push(h.job_id);
            c.state.push(h.state);
            c.worker.push(h.worker);
            c.at.push(h.at_ms);
            c.detail.push(h.detail.as_deref());
            c.later.push(h.later.as_deref());
        }
        c
    }

    fn bind<'q>(self, q: PgQuery<'q>) -> PgQuery<'q>
    where
        'a: 'q,
    {
        q.bind(self.job_id)
            .bind(self.state)
            .bind(self.worker)
            .bind(self.at)
            .bind(self.detail)
            .bind(self.later)
    }
}

async fn upsert_whole_runs(
    conn: &mut PgConnection,
    runs: &[WholeRun<'_>],
) -> Result<(), sqlx::Error> {
    if runs.is_empty() {
        return Ok(());
    }
    RunColumns::of(runs)
        .bind(sqlx::query(upsert_whole_runs_sql!()))
        .execute(conn)
        .await
        .map(drop)
}

/// The folded history rows of a commit (see [`FoldedHistory`]).
pub(super) async fn insert_history(
    conn: &mut PgConnection,
    rows: &[FoldedHistory<'_>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    HistoryColumns::of(rows)
        .bind(sqlx::query(insert_history_sql!(
            "$1", "$2", "$3", "$4", "$5", "$6"
        )))
        .execute(conn)
        .await
        .map(drop)
}

/// The `jobs` rows of published jobs, PENDING (a row already there is left alone).
pub(super) async fn insert_pending(
    conn: &mut PgConnection,
    jobs: &[NewJob],
) -> Result<(), sqlx::Error> {
    insert_new(conn, jobs, PENDING).await
}

/// The `jobs` rows of jobs published after others, WAITING (a row already there is left
/// alone: the caller checked there is none).
pub(super) async fn insert_waiting(
    conn: &mut PgConnection,
    jobs: &[NewJob],
) -> Result<(), sqlx::Error> {
    insert_new(conn, jobs, WAITING).await
}

async fn insert_new(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    state: &str,
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut columns = JobColumns::default();
    let (mut batch, mut submitted) = (vec![], vec![]);
    for job in jobs {
        columns.push(job);
        batch.push(job.batch.as_deref());
        submitted.push(job.submitted_ms);
    }
    let q = sqlx::query(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
         submitted_ms) \
         SELECT id, task, queue, args, server, recipe, kind, hosts, batch, $11::text, submitted \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::bigint[]) \
         AS r(id, task, queue, args, server, recipe, kind, hosts, batch, submitted) \
         ON CONFLICT (id) DO NOTHING",
    );
    columns
        .bind(q)
        .bind(batch)
        .bind(submitted)
        .bind(state)
        .execute(&mut *conn)
        .await?;
    let kept: Vec<&NewJob> = jobs.iter().filter(|j| !j.options.is_plain()).collect();
    canvas::keep_options(conn, &kept).await
}

//! A worker's group commits on PostgreSQL: the statements that write a [`Commit`].
//!
//! Many rows go in one statement as arrays, one per column, that `UNNEST` turns back into rows:
//! one statement text whatever the row count, so each is prepared once per connection.

use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::PgConnection;

use super::error;
use crate::store::batch::{Commit, FoldedHistory, WholeRun};
use crate::store::{is_final_sql, live_row, Event, NewJob, StoreError, STARTED};

pub(crate) struct CommitWriter {
    pool: PgPool,
    name: Arc<str>,
}

impl CommitWriter {
    pub(super) fn new(pool: PgPool, name: Arc<str>) -> Self {
        Self { pool, name }
    }

    /// Writes `commit` in one transaction.
    pub(crate) async fn write(&mut self, commit: &Commit<'_>) -> Result<(), StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            for ev in &commit.updates {
                update(&mut tx, ev).await?;
            }
            upsert_whole_runs(&mut tx, &commit.whole_runs).await?;
            insert_history(&mut tx, &commit.history).await?;
            tx.commit().await
        };
        run.await.map_err(|e| error(&self.name, e))
    }
}

/// Applies one event to its job's `jobs` row (its history is written apart). A final row is
/// left as it is (the first final state wins), its `deliveries` too: another run shows in the
/// history alone.
async fn update(conn: &mut PgConnection, ev: &Event) -> Result<(), sqlx::Error> {
    let q = match ev {
        // A delivery starts with no lease: an older run's, or a reaper's claim, is over.
        Event::Received { job, worker, at } => sqlx::query(concat!(
            "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, worker, \
             submitted_ms, deliveries) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'RECEIVED', $9, $10, 1) \
             ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, state = 'RECEIVED', \
             worker = excluded.worker, lease_owner = NULL, lease_until = NULL",
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
        .bind(&**worker)
        .bind(*at),
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
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
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

async fn upsert_whole_runs(
    conn: &mut PgConnection,
    runs: &[WholeRun<'_>],
) -> Result<(), sqlx::Error> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut jobs = JobColumns::default();
    let (mut state, mut worker, mut submitted, mut started, mut finished) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut result, mut error, mut output) = (vec![], vec![], vec![]);
    for r in runs {
        jobs.push(r.job);
        state.push(r.state);
        worker.push(r.worker);
        submitted.push(r.received_ms);
        started.push(r.started_ms);
        finished.push(r.finished_ms);
        result.push(r.result);
        error.push(r.error);
        output.push(r.output);
    }
    // lease_* are NULL in `excluded`: a finished run holds no lease.
    let q = sqlx::query(concat!(
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
    ));
    jobs.bind(q)
        .bind(state)
        .bind(worker)
        .bind(submitted)
        .bind(started)
        .bind(finished)
        .bind(result)
        .bind(error)
        .bind(output)
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
    let (mut job_id, mut state, mut worker, mut at, mut detail, mut later) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for h in rows {
        job_id.push(h.job_id);
        state.push(h.state);
        worker.push(h.worker);
        at.push(h.at_ms);
        detail.push(h.detail.as_deref());
        later.push(h.later.as_deref());
    }
    // WITH ORDINALITY ... ORDER BY: the rows take their `seq` in the commit's order.
    sqlx::query(
        "INSERT INTO job_events (job_id, state, worker, at_ms, detail, later) \
         SELECT job_id, state, worker, at_ms, detail, later FROM UNNEST($1::text[], $2::text[], \
         $3::text[], $4::bigint[], $5::text[], $6::text[]) WITH ORDINALITY \
         AS r(job_id, state, worker, at_ms, detail, later, n) ORDER BY n",
    )
    .bind(job_id)
    .bind(state)
    .bind(worker)
    .bind(at)
    .bind(detail)
    .bind(later)
    .execute(conn)
    .await
    .map(drop)
}

/// The `jobs` rows of published jobs, PENDING (a row already there is left alone).
pub(super) async fn insert_pending(
    conn: &mut PgConnection,
    jobs: &[NewJob],
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
         SELECT id, task, queue, args, server, recipe, kind, hosts, batch, 'PENDING', submitted \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::bigint[]) \
         AS r(id, task, queue, args, server, recipe, kind, hosts, batch, submitted) \
         ON CONFLICT (id) DO NOTHING",
    );
    columns
        .bind(q)
        .bind(batch)
        .bind(submitted)
        .execute(conn)
        .await
        .map(drop)
}

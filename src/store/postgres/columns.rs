//! The `jobs` columns as sqlx binds, reads and filters them: a new job's binds and a history
//! entry's, a row read into a [`JobRow`] (and the rows a statement finds), and a filter's
//! `WHERE`.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{PgQuery, Store};
use crate::store::requests::Entry;
use crate::store::sql::Columns;
use crate::store::{JobFilter, JobRow, NewJob, StoreError, PENDING, SUCCESS};

impl Store {
    /// The jobs a statement that selects (or returns) [`job_columns!`] finds.
    pub(super) async fn fetch_jobs(&self, q: PgQuery<'_>) -> Result<Vec<JobRow>, StoreError> {
        let rows = q.fetch_all(&self.pool).await.map_err(self.fail())?;
        rows.iter()
            .map(job_row)
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }
}

/// Binds a new job's columns, in the order every INSERT here names them first: id, task,
/// queue, args, server, recipe, kind, hosts.
pub(super) fn bind_job<'q>(q: PgQuery<'q>, job: &'q NewJob) -> PgQuery<'q> {
    q.bind(&job.id)
        .bind(&job.task)
        .bind(&job.queue)
        .bind(&job.args)
        .bind(&job.server)
        .bind(&job.recipe)
        .bind(&job.kind)
        .bind(&job.hosts)
}

/// Binds a history entry's columns: job_id, worker, at_ms, detail.
pub(super) fn bind_entry<'q>(q: PgQuery<'q>, e: &'q Entry) -> PgQuery<'q> {
    q.bind(&e.job_id)
        .bind(&e.worker)
        .bind(e.at_ms)
        .bind(&e.detail)
}

impl Columns for PgRow {
    type Error = sqlx::Error;

    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        self.try_get(i)
    }

    fn maybe_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(i)
    }

    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.try_get(i)
    }

    fn maybe_int(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(i)
    }
}

/// A row of [`job_columns!`].
pub(super) fn job_row(r: &PgRow) -> Result<JobRow, sqlx::Error> {
    JobRow::read(r)
}

/// ` WHERE column = $1 AND ...` for the filter's columns, and their values in order.
pub(super) fn where_clause(filter: &JobFilter) -> (String, Vec<String>) {
    filter.where_clause(|i, column, value| {
        let column = match column {
            // Only `unusual_state` is indexed (migration 0009); the two states it leaves
            // out are the common ones, found soon in newest-first order.
            "state" if value != PENDING && value != SUCCESS => "unusual_state",
            other => other,
        };
        format!("{column} = ${}", i + 1)
    })
}

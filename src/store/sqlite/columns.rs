//! The `jobs` columns as rusqlite binds, reads and filters them: a statement's placeholders
//! bound in order (a new job's columns by one helper), a row read into a [`JobRow`], and a
//! filter's `WHERE`.

use rusqlite::{Statement, ToSql};

use crate::store::sql::Columns;
use crate::store::{JobFilter, JobRow, NewJob};

/// Binds a statement's placeholders in order.
pub(super) struct Binder<'s, 'c> {
    st: &'s mut Statement<'c>,
    next: usize,
}

impl<'s, 'c> Binder<'s, 'c> {
    pub(super) fn new(st: &'s mut Statement<'c>) -> Self {
        Self { st, next: 1 }
    }

    pub(super) fn bind(&mut self, value: impl ToSql) -> rusqlite::Result<&mut Self> {
        self.st.raw_bind_parameter(self.next, value)?;
        self.next += 1;
        Ok(self)
    }

    /// A new job's columns, in the order every INSERT here names them first: id, task, queue,
    /// args, server, recipe, kind, hosts.
    pub(super) fn job(&mut self, job: &NewJob) -> rusqlite::Result<&mut Self> {
        self.bind(&job.id)?
            .bind(&job.task)?
            .bind(&job.queue)?
            .bind(&job.args)?
            .bind(job.server.as_deref())?
            .bind(job.recipe.as_deref())?
            .bind(job.kind.as_deref())?
            .bind(job.hosts.as_deref())
    }

    /// Runs the statement once every placeholder is bound.
    pub(super) fn execute(&mut self) -> rusqlite::Result<usize> {
        let expected = self.st.parameter_count();
        if self.next - 1 != expected {
            return Err(rusqlite::Error::InvalidParameterCount(
                self.next - 1,
                expected,
            ));
        }
        self.st.raw_execute()
    }
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }

    fn maybe_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }

    fn maybe_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
}

/// A row of [`job_columns!`], for `query_row` and `query_map`.
pub(super) fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    JobRow::read(r)
}

/// ` WHERE column = ? AND ...` for the filter's columns, and their values in order.
pub(super) fn where_clause(filter: &JobFilter) -> (String, Vec<rusqlite::types::Value>) {
    let (clause, values) = filter.where_clause(|_, column, _| format!("{column} = ?"));
    (clause, values.into_iter().map(Into::into).collect())
}

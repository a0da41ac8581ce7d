//! What the two backends' SQL has in common, as text or as code without a driver: the
//! fragments both dialects write alike, a `jobs` row read into a [`JobRow`] whichever driver
//! holds it, a filter's `WHERE` joined, and the run-time histogram's buckets and result. Each
//! backend's statements stay its own.

use super::{DurationHistogram, JobFilter, JobRow, JobSpec, MessageOptions};

/// SQL that is true when column `$col` holds a final state: [`is_final`](super::is_final) for
/// either backend.
/// Comparisons, not `IN (...)`: SQLite builds a temporary table for a list of three or more
/// constants, each time a statement runs.
macro_rules! is_final_sql {
    ($col:literal) => {
        concat!(
            "(",
            $col,
            " = 'SUCCESS' OR ",
            $col,
            " = 'FAILURE' OR ",
            $col,
            " = 'REVOKED')"
        )
    };
}
pub(crate) use is_final_sql;

/// The `jobs` columns in [`JobRow`]'s order (a macro, so that statements can `concat!` it).
macro_rules! job_columns {
    () => {
        "id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, \
         submitted_ms, started_ms, finished_ms, result, error, deliveries, retries, output, \
         lease_owner, lease_until, eta_ms, expires_ms, time_limit_ms, soft_time_limit_ms, \
         reply_to, priority, waits_for, embed, group_id, group_index, parent_id, root_id"
    };
}
pub(crate) use job_columns;

/// The `WHERE` of an upsert's `DO UPDATE`: the row there is not final, so it may change (the
/// first final state wins; a final row keeps even its `deliveries`, the other run shows in the
/// history). The row a worker's upsert meets is nearly always its producer's PENDING one:
/// tested first, one comparison decides (OR stops there) where the final test takes three.
macro_rules! live_row {
    () => {
        concat!(
            " WHERE jobs.state = 'PENDING' OR NOT ",
            $crate::store::is_final_sql!("jobs.state")
        )
    };
}
pub(crate) use live_row;

/// A row's columns, as one driver reads them: each backend says how a column of each kind is
/// read, and [`JobRow::read`] reads a row of [`job_columns!`] with them, in order.
pub(super) trait Columns {
    type Error;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn maybe_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn maybe_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
}

impl JobRow {
    /// A row of [`job_columns!`].
    pub(super) fn read<R: Columns + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok(Self {
            job: JobSpec::read(r)?,
            state: r.text(9)?,
            worker: r.maybe_text(10)?,
            started_ms: r.maybe_int(12)?,
            finished_ms: r.maybe_int(13)?,
            result: r.maybe_text(14)?,
            error: r.maybe_text(15)?,
            deliveries: r.int(16)?,
            retries: r.int(17)?,
            output: r.maybe_text(18)?,
            lease_owner: r.maybe_text(19)?,
            lease_until: r.maybe_int(20)?,
            waits_for: r.maybe_text(27)?,
        })
    }
}

impl JobSpec<Option<i64>> {
    /// What the job is, of a row of [`job_columns!`].
    fn read<R: Columns + ?Sized>(r: &R) -> Result<Self, R::Error> {
        Ok(Self {
            id: r.text(0)?,
            task: r.text(1)?,
            queue: r.text(2)?,
            args: r.text(3)?,
            server: r.maybe_text(4)?,
            recipe: r.maybe_text(5)?,
            kind: r.maybe_text(6)?,
            hosts: r.maybe_text(7)?,
            batch: r.maybe_text(8)?,
            submitted_ms: r.maybe_int(11)?,
            options: Box::new(MessageOptions {
                eta_ms: r.maybe_int(21)?,
                expires_ms: r.maybe_int(22)?,
                time_limit_ms: r.maybe_int(23)?,
                soft_time_limit_ms: r.maybe_int(24)?,
                reply_to: r.maybe_text(25)?,
                priority: r.int(26)?,
                embed: r.maybe_text(28)?,
                group_id: r.maybe_text(29)?,
                group_index: r.maybe_int(30)?,
                parent_id: r.maybe_text(31)?,
                root_id: r.maybe_text(32)?,
            }),
        })
    }
}

impl DurationHistogram {
    /// The histogram of a row of the count, the sum and the [`duration_buckets`] of `bounds_ms`.
    pub(super) fn from_columns(bounds_ms: &[i64], columns: &[i64]) -> Self {
        let column = |i: usize| columns.get(i).copied().unwrap_or(0);
        Self {
            at_most: (bounds_ms.iter().enumerate())
                .map(|(i, bound)| (*bound, column(i + 2)))
                .collect(),
            count: column(0),
            sum_ms: column(1),
        }
    }
}

/// The run-time histogram's bucket columns, after its count and sum: for each of `bounds`
/// upper bounds, how many jobs ran at most that long, the bound a parameter numbered from 1,
/// as `placeholder` writes it.
pub(super) fn duration_buckets(bounds: usize, placeholder: impl Fn(usize) -> String) -> String {
    (1..=bounds)
        .map(|i| {
            format!(
                ", COUNT(*) FILTER (WHERE finished_ms - started_ms <= {})",
                placeholder(i)
            )
        })
        .collect()
}

impl JobFilter {
    /// ` WHERE a AND b ...` over the columns this filter narrows (empty when none), each
    /// condition as `condition(i, column, value)` writes it for its backend, and the values in
    /// the same order.
    pub(super) fn where_clause(
        &self,
        mut condition: impl FnMut(usize, &str, &str) -> String,
    ) -> (String, Vec<String>) {
        let (conditions, values): (Vec<String>, Vec<String>) = self
            .columns()
            .enumerate()
            .map(|(i, (column, value))| (condition(i, column, value), value.to_string()))
            .unzip();
        if conditions.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", conditions.join(" AND ")), values)
        }
    }
}

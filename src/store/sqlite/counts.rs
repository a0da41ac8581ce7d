//! How many jobs: counted by filter, or read off the counts the store keeps (migration 0006),
//! which the triggers log in `job_count_changes` and a fold adds up; run times as a histogram.

use rusqlite::{Connection, TransactionBehavior};

use super::columns::where_clause;
use super::{is_busy, Store};
use crate::store::sql::duration_buckets;
use crate::store::{Counts, JobFilter, StoreError};

impl Store {
    pub(crate) async fn count(&self, filter: &JobFilter) -> Result<i64, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM jobs{clause}");
        self.pool
            .run(move |conn| {
                conn.prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&binds), |r| r.get(0))
            })
            .await
    }

    pub(crate) async fn counts_by_state(&self, filter: &JobFilter) -> Result<Counts, StoreError> {
        let (clause, binds) = where_clause(filter);
        let sql = format!("SELECT state, COUNT(*) FROM jobs{clause} GROUP BY state ORDER BY state");
        self.pool.run(move |conn| pairs(conn, &sql, &binds)).await
    }

    /// Runs `read` of the kept counts (see migration 0006), first folding the changes waiting
    /// when they are many: cm's writers fold as they write, but rows written by anything else (a
    /// bulk INSERT, an older cm) would otherwise be added up again by every read until the next
    /// commit. A fold that cannot have the write lock in time is left to later: the views are
    /// right either way.
    async fn read_counts<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.pool
            .run(move |conn| {
                if changes_waiting(conn)? >= FOLD_AT {
                    let fold = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .and_then(|tx| {
                            fold_counts_if_long(&tx)?;
                            tx.commit()
                        });
                    match fold {
                        Err(e) if is_busy(&e) => {
                            tracing::debug!("kept counts not folded, the store is busy: {e}")
                        }
                        other => other?,
                    }
                }
                read(conn)
            })
            .await
    }

    /// The kept counts, of `state` alone or of every state.
    pub(crate) async fn kept_count(&self, state: Option<&str>) -> Result<i64, StoreError> {
        let state = state.map(str::to_string);
        self.read_counts(move |conn| {
            conn.prepare_cached(
                "SELECT COALESCE(SUM(n), 0) FROM job_state_totals WHERE ?1 IS NULL OR state = ?1",
            )?
            .query_row([&state], |r| r.get(0))
        })
        .await
    }

    pub(crate) async fn kept_counts_by_state(
        &self,
        state: Option<&str>,
    ) -> Result<Counts, StoreError> {
        let state: rusqlite::types::Value = state.map(str::to_string).into();
        self.read_counts(move |conn| {
            pairs(
                conn,
                "SELECT state, n FROM job_state_totals \
                 WHERE n > 0 AND (?1 IS NULL OR state = ?1) ORDER BY state",
                &[state],
            )
        })
        .await
    }

    pub(crate) async fn counts_by_worker(&self) -> Result<Counts, StoreError> {
        self.read_counts(|conn| {
            pairs(
                conn,
                "SELECT worker, n FROM job_worker_totals WHERE n > 0 ORDER BY worker",
                &[],
            )
        })
        .await
    }

    /// (clock minute, jobs finished in it) from minute `first` on, for the minutes that have any.
    pub(crate) async fn finished_per_minute(
        &self,
        first: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.read_counts(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT minute, n FROM job_finished_minute_totals WHERE minute >= ?1 AND n > 0",
            )?;
            let rows = st.query_map([first], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// The run-time histogram's columns (see [`crate::store::DurationHistogram::from_columns`]).
    pub(crate) async fn run_times(&self, bounds_ms: &[i64]) -> Result<Vec<i64>, StoreError> {
        let buckets = duration_buckets(bounds_ms.len(), |i| format!("?{i}"));
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(finished_ms - started_ms), 0){buckets} FROM jobs \
             WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL"
        );
        let bounds = bounds_ms.to_vec();
        self.pool
            .run(move |conn| {
                conn.prepare_cached(&sql)?
                    .query_row(rusqlite::params_from_iter(&bounds), |r| {
                        (0..bounds.len() + 2).map(|i| r.get(i)).collect()
                    })
            })
            .await
    }
}

/// The (text, count) rows of `sql`.
fn pairs(
    conn: &Connection,
    sql: &str,
    binds: &[rusqlite::types::Value],
) -> rusqlite::Result<Counts> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(binds), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    rows.collect()
}
/// Changes recorded before [`fold_counts_if_long`] folds them. A fold is five statements, as
/// many instructions as ten jobs' commit (callgrind-drain: 20k a job when each commit folded),
/// while readers add a thousand unfolded rows in well under a millisecond.
pub(super) const FOLD_AT: i64 = 1024;

/// About how many changes wait to be folded: each fold empties the log, so its largest rowid
/// is about how many rows it holds. One B-tree seek, not a count.
pub(super) fn changes_waiting(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(rowid), 0) FROM job_count_changes")?
        .query_row([], |r| r.get(0))
}

/// [`fold_counts`] once `FOLD_AT` changes wait.
pub(super) fn fold_counts_if_long(conn: &Connection) -> rusqlite::Result<()> {
    if changes_waiting(conn)? >= FOLD_AT {
        fold_counts(conn)?;
    }
    Ok(())
}

/// Adds the changes the triggers recorded in `job_count_changes` to the kept counts, and
/// empties it (see migration 0006): every change not folded yet, this transaction's or any
/// earlier writer's. Minutes over a day old are dropped.
pub(super) fn fold_counts(conn: &Connection) -> rusqlite::Result<()> {
    // `WHERE true`: an upsert's SELECT needs a WHERE, or SQLite reads ON as a join's.
    const FOLD: [&str; 5] = [
        "INSERT INTO job_state_counts (state, n) SELECT state, SUM(n) FROM \
         (SELECT state, 1 AS n FROM job_count_changes WHERE state IS NOT NULL UNION ALL \
         SELECT state_was, -1 FROM job_count_changes WHERE state_was IS NOT NULL) \
         WHERE true GROUP BY state HAVING SUM(n) <> 0 \
         ON CONFLICT (state) DO UPDATE SET n = n + excluded.n",
        "INSERT INTO job_worker_counts (worker, n) SELECT worker, SUM(n) FROM \
         (SELECT worker, 1 AS n FROM job_count_changes WHERE worker IS NOT NULL UNION ALL \
         SELECT worker_was, -1 FROM job_count_changes WHERE worker_was IS NOT NULL) \
         WHERE true GROUP BY worker HAVING SUM(n) <> 0 \
         ON CONFLICT (worker) DO UPDATE SET n = n + excluded.n",
        "INSERT INTO job_finished_minutes (minute, n) SELECT minute, SUM(n) FROM \
         (SELECT minute, 1 AS n FROM job_count_changes WHERE minute IS NOT NULL UNION ALL \
         SELECT minute_was, -1 FROM job_count_changes WHERE minute_was IS NOT NULL) \
         WHERE true GROUP BY minute HAVING SUM(n) <> 0 \
         ON CONFLICT (minute) DO UPDATE SET n = n + excluded.n",
        "DELETE FROM job_finished_minutes \
         WHERE minute < CAST(strftime('%s', 'now') AS INTEGER) / 60 - 1440",
        "DELETE FROM job_count_changes",
    ];
    for sql in FOLD {
        conn.prepare_cached(sql)?.execute([])?;
    }
    Ok(())
}

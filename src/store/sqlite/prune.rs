//! Retention: finished jobs past their age deleted with their history, a batch per
//! transaction (see `store::firings::Prune`). The delete trigger keeps the counts exact.

use rusqlite::{params, Connection, TransactionBehavior};

use super::{counts, Store};
use crate::store::{Prune, StoreError};

/// The jobs of task `?1` older than its newest `keep_last` (submitted before `?2`, or then
/// with an id before `?5`: ties broken by id) that may go: SUCCESS finished before `?3`,
/// FAILURE or REVOKED before `?4`, none the newest firing of a schedule, none a parent of a
/// job still WAITING (its release reads its parents' rows); a pruned job's edges go with it.
/// The state's index (state, submitted_ms) finds them.
const MAY_GO: &str = "SELECT id FROM jobs WHERE task = ?1 AND (submitted_ms < ?2 OR (submitted_ms = ?2 AND id < ?5)) AND \
     ((state = 'SUCCESS' AND COALESCE(finished_ms, submitted_ms) < ?3) OR \
     ((state = 'FAILURE' OR state = 'REVOKED') AND COALESCE(finished_ms, submitted_ms) < ?4)) \
     AND id NOT IN (SELECT n.job_id FROM (SELECT (SELECT job_id FROM schedule_firings f \
     WHERE f.schedule = s.name AND f.job_id IS NOT NULL ORDER BY f.seq DESC LIMIT 1) AS job_id \
     FROM schedules s) n WHERE n.job_id IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM job_edges e JOIN jobs c ON c.id = e.child \
     WHERE e.parent = jobs.id AND c.state = 'WAITING')";

impl Store {
    pub(crate) async fn prune(&self, rules: &Prune) -> Result<u64, StoreError> {
        let rules = *rules;
        if rules.succeeded_before.is_none() && rules.failed_before.is_none() {
            return Ok(0);
        }
        let keep_last = rules.keep_last;
        let tasks = self
            .pool
            .run(move |conn| tasks_with_cutoff(conn, keep_last))
            .await?;
        let mut total = 0u64;
        for (task, cutoff, cut_id) in tasks {
            if rules.dry_run {
                let (task, cut_id) = (task.clone(), cut_id.clone());
                total += self
                    .pool
                    .run(move |conn| {
                        let sql = format!("SELECT COUNT(*) FROM ({MAY_GO})");
                        let binds = params![
                            task,
                            cutoff,
                            rules.succeeded_before,
                            rules.failed_before,
                            cut_id
                        ];
                        conn.prepare_cached(&sql)?
                            .query_row(binds, |r| r.get::<_, i64>(0))
                    })
                    .await?
                    .unsigned_abs();
                continue;
            }
            loop {
                let (task, cut_id) = (task.clone(), cut_id.clone());
                let removed = self
                    .pool
                    .run(move |conn| delete_batch(conn, &task, (cutoff, &cut_id), &rules))
                    .await?;
                total += removed as u64;
                if removed < rules.batch {
                    break;
                }
                // Between batches the writer (and the jobs' commits) take the lock.
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }
}

/// Each task, and the submission time before which its jobs are not among its newest
/// `keep_last` (all of them may go when it keeps none; none when it has fewer).
fn tasks_with_cutoff(
    conn: &Connection,
    keep_last: u64,
) -> rusqlite::Result<Vec<(String, i64, String)>> {
    let tasks: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT task FROM jobs")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        if keep_last == 0 {
            out.push((task, i64::MAX, String::new()));
            continue;
        }
        let offset = i64::try_from(keep_last - 1).unwrap_or(i64::MAX);
        let cutoff: Option<(i64, String)> = conn
            .prepare_cached(
                "SELECT submitted_ms, id FROM jobs WHERE task = ?1 \
                 ORDER BY submitted_ms DESC, id DESC LIMIT 1 OFFSET ?2",
            )?
            .query_map(params![task, offset], |r| Ok((r.get(0)?, r.get(1)?)))?
            .next()
            .transpose()?;
        if let Some((ms, id)) = cutoff {
            out.push((task, ms, id));
        }
    }
    Ok(out)
}

fn delete_batch(
    conn: &mut Connection,
    task: &str,
    (cutoff, cut_id): (i64, &str),
    rules: &Prune,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<String> = tx
        .prepare_cached(&format!("{MAY_GO} LIMIT ?6"))?
        .query_map(
            params![
                task,
                cutoff,
                rules.succeeded_before,
                rules.failed_before,
                cut_id,
                i64::try_from(rules.batch).unwrap_or(i64::MAX)
            ],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    for sql in [
        "DELETE FROM job_events WHERE job_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM schedule_firings WHERE job_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM job_edges WHERE child IN (SELECT value FROM json_each(?1)) \
         OR parent IN (SELECT value FROM json_each(?1))",
        "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
    ] {
        tx.prepare_cached(sql)?.execute([&json])?;
    }
    counts::fold_counts_if_long(&tx)?;
    tx.commit()?;
    Ok(ids.len())
}

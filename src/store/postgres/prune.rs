//! Retention: finished jobs past their age deleted with their history, a batch per
//! transaction (see `store::firings::Prune`). The delete trigger keeps the counts exact.

use super::Store;
use crate::store::{Prune, StoreError};

/// The jobs of task `$1` older than its newest `keep_last` (submitted before `$2`, or then
/// with an id before `$5`: ties broken by id) that may go: SUCCESS finished before `$3`,
/// FAILURE or REVOKED before `$4`, none the newest firing of a schedule, none a parent of a job
/// still WAITING (its release reads its parents' rows); a pruned job's edges go with it.
const MAY_GO: &str = "SELECT id FROM jobs WHERE task = $1 AND (submitted_ms < $2 OR (submitted_ms = $2 AND id < $5)) AND \
     ((state = 'SUCCESS' AND COALESCE(finished_ms, submitted_ms) < $3) OR \
     ((state = 'FAILURE' OR state = 'REVOKED') AND COALESCE(finished_ms, submitted_ms) < $4)) \
     AND id NOT IN (SELECT n.job_id FROM (SELECT (SELECT job_id FROM schedule_firings f \
     WHERE f.schedule = s.name AND f.job_id IS NOT NULL ORDER BY f.seq DESC LIMIT 1) AS job_id \
     FROM schedules s) n WHERE n.job_id IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM job_edges e JOIN jobs c ON c.id = e.child \
     WHERE e.parent = jobs.id AND c.state = 'WAITING')";

impl Store {
    pub(crate) async fn prune(&self, rules: &Prune) -> Result<u64, StoreError> {
        if rules.succeeded_before.is_none() && rules.failed_before.is_none() {
            return Ok(0);
        }
        let tasks = self.tasks_with_cutoff(rules.keep_last).await?;
        let mut total = 0u64;
        for (task, cutoff, cut_id) in tasks {
            if rules.dry_run {
                let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({MAY_GO}) AS g"))
                    .bind(&task)
                    .bind(cutoff)
                    .bind(rules.succeeded_before)
                    .bind(rules.failed_before)
                    .bind(&cut_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(self.fail())?;
                total += n.unsigned_abs();
                continue;
            }
            loop {
                let removed = self.delete_batch(&task, (cutoff, &cut_id), rules).await?;
                total += removed;
                if removed < rules.batch as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Each task, and the submission time before which its jobs are not among its newest
    /// `keep_last` (all of them may go when it keeps none; none when it has fewer).
    async fn tasks_with_cutoff(
        &self,
        keep_last: u64,
    ) -> Result<Vec<(String, i64, String)>, StoreError> {
        let tasks: Vec<String> = sqlx::query_scalar("SELECT DISTINCT task FROM jobs")
            .fetch_all(&self.pool)
            .await
            .map_err(self.fail())?;
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if keep_last == 0 {
                out.push((task, i64::MAX, String::new()));
                continue;
            }
            let cutoff: Option<(i64, String)> = sqlx::query_as(
                "SELECT submitted_ms, id FROM jobs WHERE task = $1 \
                 ORDER BY submitted_ms DESC, id DESC LIMIT 1 OFFSET $2",
            )
            .bind(&task)
            .bind(i64::try_from(keep_last - 1).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(self.fail())?;
            if let Some((ms, id)) = cutoff {
                out.push((task, ms, id));
            }
        }
        Ok(out)
    }

    async fn delete_batch(
        &self,
        task: &str,
        (cutoff, cut_id): (i64, &str),
        rules: &Prune,
    ) -> Result<u64, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            // Locked, so that a racing pruner skips them rather than waits.
            let ids: Vec<String> =
                sqlx::query_scalar(&format!("{MAY_GO} LIMIT $6 FOR UPDATE SKIP LOCKED"))
                    .bind(task)
                    .bind(cutoff)
                    .bind(rules.succeeded_before)
                    .bind(rules.failed_before)
                    .bind(cut_id)
                    .bind(i64::try_from(rules.batch).unwrap_or(i64::MAX))
                    .fetch_all(&mut *tx)
                    .await?;
            for sql in [
                "DELETE FROM job_events WHERE job_id = ANY($1)",
                "DELETE FROM schedule_firings WHERE job_id = ANY($1)",
                "DELETE FROM job_edges WHERE child = ANY($1) OR parent = ANY($1)",
                "DELETE FROM jobs WHERE id = ANY($1)",
            ] {
                sqlx::query(sql).bind(&ids).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(ids.len() as u64)
        };
        run.await.map_err(self.fail())
    }
}

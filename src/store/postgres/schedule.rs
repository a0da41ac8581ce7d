//! Jobs received before their eta: held as SCHEDULED, then claimed when due by one scheduler.

use super::jobs::bind_job;
use super::Store;
use crate::store::{job_columns, live_row, JobRow, MessageOptions, NewJob, StoreError};

impl Store {
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
            let upsert = sqlx::query(concat!(
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
            ));
            let changed = bind_job(upsert, job)
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
        let q = sqlx::query(concat!(
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
        .bind(limit);
        self.fetch_jobs(q).await
    }
}

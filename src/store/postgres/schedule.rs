//! Jobs received before their eta: held as SCHEDULED, then claimed when due by one scheduler.

use super::columns::{bind_entry, bind_job};
use super::Store;
use crate::store::requests::{Claim, First, Scheduling};
use crate::store::{job_columns, live_row, JobRow, StoreError};

impl Store {
    pub(crate) async fn schedule(&self, s: &Scheduling) -> Result<(), StoreError> {
        let (job, o, e) = (&s.job, &s.options, &s.entry);
        let run = async {
            let mut tx = self.pool.begin().await?;
            let upsert = sqlx::query(concat!(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
                 worker, submitted_ms, deliveries, eta_ms, expires_ms, time_limit_ms, \
                 soft_time_limit_ms, reply_to, priority) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'SCHEDULED', $9, $10, 1, $11, $12, $13, \
                 $14, $15, $16) \
                 ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                 state = 'SCHEDULED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
                 expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
                 soft_time_limit_ms = excluded.soft_time_limit_ms, reply_to = excluded.reply_to, \
                 priority = excluded.priority, lease_owner = NULL, lease_until = NULL",
                live_row!()
            ));
            let changed = bind_job(upsert, job)
                .bind(&e.worker)
                .bind(job.submitted_ms)
                .bind(o.eta_ms)
                .bind(o.expires_ms)
                .bind(o.time_limit_ms)
                .bind(o.soft_time_limit_ms)
                .bind(&o.reply_to)
                .bind(o.priority)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed > 0 {
                let history = sqlx::query(
                    "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                     VALUES ($1, 'SCHEDULED', $2, $3, $4)",
                );
                bind_entry(history, e).execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn claim_due(&self, f: &First, c: &Claim) -> Result<Vec<JobRow>, StoreError> {
        // One UPDATE: a racing claim waits for each row's lock, then re-checks the outer WHERE
        // against the committed row and finds it claimed (READ COMMITTED), so skips it.
        let q = sqlx::query(concat!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT id FROM jobs WHERE unusual_state = 'SCHEDULED' AND queue = $3 \
             AND eta_ms <= $4 \
             AND lease_owner IS NULL ORDER BY priority DESC, eta_ms LIMIT $5) \
             AND state = 'SCHEDULED' AND lease_owner IS NULL RETURNING ",
            job_columns!()
        ))
        .bind(&c.owner)
        .bind(c.until_ms)
        .bind(&f.queue)
        .bind(c.now_ms)
        .bind(f.limit);
        self.fetch_jobs(q).await
    }
}

//! Jobs received before their eta: held as SCHEDULED, then claimed when due by one scheduler.

use rusqlite::{params, TransactionBehavior};

use super::columns::{job_row, Binder};
use super::Store;
use crate::store::requests::{Claim, First, Scheduling};
use crate::store::{job_columns, live_row, JobRow, StoreError};

impl Store {
    pub(crate) async fn schedule(&self, s: &Scheduling) -> Result<(), StoreError> {
        let Scheduling {
            job,
            options: o,
            entry: e,
        } = s.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut upsert = tx.prepare_cached(concat!(
                    "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, \
                     state, worker, submitted_ms, deliveries, eta_ms, expires_ms, \
                     time_limit_ms, soft_time_limit_ms, reply_to, priority) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'SCHEDULED', ?9, ?10, 1, ?11, \
                     ?12, ?13, ?14, ?15, ?16) \
                     ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
                     state = 'SCHEDULED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
                     expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
                     soft_time_limit_ms = excluded.soft_time_limit_ms, \
                     reply_to = excluded.reply_to, priority = excluded.priority, \
                     lease_owner = NULL, lease_until = NULL",
                    live_row!()
                ))?;
                let changed = Binder::new(&mut upsert)
                    .job(&job)?
                    .bind(&e.worker)?
                    .bind(job.submitted_ms)?
                    .bind(o.eta_ms)?
                    .bind(o.expires_ms)?
                    .bind(o.time_limit_ms)?
                    .bind(o.soft_time_limit_ms)?
                    .bind(&o.reply_to)?
                    .bind(o.priority)?
                    .execute()?;
                drop(upsert);
                if changed > 0 {
                    tx.prepare_cached(
                        "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
                         VALUES (?1, 'SCHEDULED', ?2, ?3, ?4)",
                    )?
                    .execute(params![e.job_id, e.worker, e.at_ms, e.detail])?;
                }
                tx.commit()
            })
            .await
    }

    pub(crate) async fn claim_due(&self, f: &First, c: &Claim) -> Result<Vec<JobRow>, StoreError> {
        let (f, c) = (f.clone(), c.clone());
        self.pool
            .run(move |conn| {
                // One statement, under SQLite's one write lock: a racing claim finds them taken.
                let mut st = conn.prepare_cached(concat!(
                    "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 WHERE id IN \
                     (SELECT id FROM jobs WHERE state = 'SCHEDULED' AND queue = ?3 \
                     AND eta_ms <= ?4 AND lease_owner IS NULL ORDER BY priority DESC, eta_ms LIMIT ?5) \
                     AND state = 'SCHEDULED' AND lease_owner IS NULL RETURNING ",
                    job_columns!()
                ))?;
                let binds = params![c.owner, c.until_ms, f.queue, c.now_ms, f.limit];
                let rows = st.query_map(binds, job_row)?;
                rows.collect()
            })
            .await
    }
}

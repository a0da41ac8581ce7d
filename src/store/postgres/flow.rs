//! Flow control: a job's gates taken, or the job held THROTTLED; held jobs granted their places
//! as the gates free. Each call is one transaction that first locks the rows of its gates (an
//! upsert, in name order): two hosts at one gate take turns, and each statement after the lock
//! sees what the other committed (READ COMMITTED).

use sqlx::{Postgres, Row, Transaction};

use super::columns::{bind_job, job_row};
use super::rates::override_at;
use super::Store;
use crate::store::flow::{
    behind, grants_allowed, in_force, key_held, rate_starts, take_rate, unlimited, Admission,
    Admitting, Gate, Rule, IN_FLIGHT_FOR_MS,
};
use crate::store::requests::Claim;
use crate::store::{job_columns, live_row, JobRow, StoreError};

type Tx<'c> = Transaction<'c, Postgres>;

impl Store {
    pub(crate) async fn admit_flow(&self, a: &Admitting) -> Result<Admission, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let verdict = admit(&mut tx, a).await?;
            tx.commit().await?;
            Ok(verdict)
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn held_gates(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT DISTINCT flow_key FROM jobs WHERE unusual_state = 'THROTTLED' \
             AND queue = $1 AND lease_owner IS NULL AND flow_key IS NOT NULL",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn release_held(
        &self,
        gate: &str,
        queue: &str,
        c: &Claim,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let rows = release(&mut tx, gate, queue, c, limit).await?;
            tx.commit().await?;
            Ok(rows)
        };
        run.await.map_err(self.fail())
    }
}

/// Locks the gate's row, writing its rule as this worker's config says it; returns its next
/// start.
async fn lock_gate(tx: &mut Tx<'_>, g: &Gate) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO flow_gates (name, kind, interval_ms, slots) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
         interval_ms = excluded.interval_ms, slots = excluded.slots RETURNING next_ms",
    )
    .bind(&g.name)
    .bind(g.rule.kind())
    .bind(g.rule.interval_ms())
    .bind(g.rule.slots())
    .fetch_one(&mut **tx)
    .await
}

async fn admit(tx: &mut Tx<'_>, a: &Admitting) -> Result<Admission, sqlx::Error> {
    // Jobs already waiting at a gate go first: a newcomer is held behind them without taking
    // the gate's lock (which would make every newcomer of a busy gate wait for every other).
    // Holding it is safe whatever happens meanwhile: the releaser grants it in turn.
    for g in &a.gates {
        if !holds_place(tx, a, g).await? && others_wait(tx, a, g).await? {
            let reason = behind(g);
            hold(tx, a, g, &reason).await?;
            return Ok(Admission::Held { reason });
        }
    }
    let now = a.now_ms as f64;
    let mut takes: Vec<(Gate, Option<f64>)> = Vec::with_capacity(a.gates.len());
    let mut held = None;
    for g in &a.gates {
        let next = lock_gate(tx, g).await?;
        // An operator's rate, read now that the gate's row is locked, is the rule in force.
        let g = in_force(g, override_at(tx, &g.name).await?);
        if holds_place(tx, a, &g).await? || unlimited(&g) {
            continue;
        }
        if others_wait(tx, a, &g).await? {
            let reason = behind(&g);
            held = Some((g, reason));
            break;
        }
        match &g.rule {
            Rule::Rate { interval_ms } => match take_rate(next, *interval_ms, now) {
                Some(after) => takes.push((g, Some(after))),
                None => {
                    let reason = g.reason.clone();
                    held = Some((g, reason));
                    break;
                }
            },
            Rule::Key { slots } => {
                let row =
                    sqlx::query("SELECT COUNT(*), MIN(job_id) FROM flow_slots WHERE gate = $1")
                        .bind(&g.name)
                        .fetch_one(&mut **tx)
                        .await?;
                let (taken, holder): (i64, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
                if taken >= *slots {
                    let reason = key_held(&g, holder.as_deref().unwrap_or("?"));
                    held = Some((g, reason));
                    break;
                }
                takes.push((g, None));
            }
        }
    }
    if let Some((g, reason)) = held {
        hold(tx, a, &g, &reason).await?;
        return Ok(Admission::Held { reason });
    }
    for (g, next) in takes {
        take(tx, &a.job.id, &g.name, next, a.now_ms).await?;
    }
    // A redelivery of a job held here (its worker died before the ack) starts now: no
    // releaser may grant and publish it a second time.
    sqlx::query(
        "UPDATE jobs SET state = 'PENDING', waits_for = NULL \
         WHERE id = $1 AND state = 'THROTTLED' AND lease_owner IS NULL",
    )
    .bind(&a.job.id)
    .execute(&mut **tx)
    .await?;
    Ok(Admission::Go)
}

/// Whether the job holds a place at `g` already (granted, or an earlier delivery's): used now.
async fn holds_place(tx: &mut Tx<'_>, a: &Admitting, g: &Gate) -> Result<bool, sqlx::Error> {
    let used = sqlx::query("UPDATE flow_slots SET used = TRUE WHERE job_id = $1 AND gate = $2")
        .bind(&a.job.id)
        .bind(&g.name)
        .execute(&mut **tx)
        .await?;
    Ok(used.rows_affected() > 0)
}

/// Whether other jobs wait at `g`, not yet granted.
async fn others_wait(tx: &mut Tx<'_>, a: &Admitting, g: &Gate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE unusual_state = 'THROTTLED' \
         AND flow_key = $1 AND lease_owner IS NULL AND id <> $2)",
    )
    .bind(&g.name)
    .bind(&a.job.id)
    .fetch_one(&mut **tx)
    .await
}

/// Takes job `id`'s place at `gate`: its slot row, and a rate's next start.
async fn take(
    tx: &mut Tx<'_>,
    id: &str,
    gate: &str,
    next: Option<f64>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if let Some(next) = next {
        sqlx::query("UPDATE flow_gates SET next_ms = $2 WHERE name = $1")
            .bind(gate)
            .bind(next)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO flow_slots (job_id, gate, taken_ms, used) VALUES ($1, $2, $3, TRUE) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(gate)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the job THROTTLED at gate `g` with `reason` (a final row is left as it is), with a
/// THROTTLED history row.
async fn hold(tx: &mut Tx<'_>, a: &Admitting, g: &Gate, reason: &str) -> Result<(), sqlx::Error> {
    let (job, o) = (&a.job, &a.options);
    let upsert = sqlx::query(concat!(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, \
         worker, submitted_ms, deliveries, eta_ms, expires_ms, time_limit_ms, \
         soft_time_limit_ms, reply_to, priority, flow_key, waits_for) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'THROTTLED', $9, $10, 1, $11, $12, $13, \
         $14, $15, $16, $17, $18) \
         ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
         state = 'THROTTLED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
         expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
         soft_time_limit_ms = excluded.soft_time_limit_ms, reply_to = excluded.reply_to, \
         priority = excluded.priority, flow_key = excluded.flow_key, \
         waits_for = excluded.waits_for, lease_owner = NULL, lease_until = NULL",
        live_row!()
    ));
    let changed = bind_job(upsert, job)
        .bind(&a.worker)
        .bind(job.submitted_ms)
        .bind(o.eta_ms)
        .bind(o.expires_ms)
        .bind(o.time_limit_ms)
        .bind(o.soft_time_limit_ms)
        .bind(&o.reply_to)
        .bind(o.priority)
        .bind(&g.name)
        .bind(reason)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if changed > 0 {
        sqlx::query(
            "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
             VALUES ($1, 'THROTTLED', $2, $3, $4)",
        )
        .bind(&job.id)
        .bind(&a.worker)
        .bind(a.now_ms)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn release(
    tx: &mut Tx<'_>,
    gate: &str,
    queue: &str,
    c: &Claim,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT kind, interval_ms, slots, next_ms FROM flow_gates WHERE name = $1 FOR UPDATE",
    )
    .bind(gate)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    let (kind, mut interval_ms, slots, next_ms): (String, f64, i64, f64) = (
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    );
    if let Some((over, _)) = override_at(tx, gate).await? {
        interval_ms = over;
    }
    let now = c.now_ms as f64;
    let free = if kind == "rate" && interval_ms <= 0.0 {
        // No limit in force (an operator's "off", or the config's none): all go.
        limit
    } else if kind == "rate" {
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM flow_slots WHERE gate = $1 AND NOT used AND taken_ms > $2",
        )
        .bind(gate)
        .bind(c.now_ms - IN_FLIGHT_FOR_MS)
        .fetch_one(&mut **tx)
        .await?;
        let most = limit.min(grants_allowed(interval_ms, in_flight));
        rate_starts(next_ms, interval_ms, now, most).0
    } else {
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flow_slots WHERE gate = $1")
            .bind(gate)
            .fetch_one(&mut **tx)
            .await?;
        (slots - taken).clamp(0, limit)
    };
    if free == 0 {
        return Ok(Vec::new());
    }
    let granted = sqlx::query(concat!(
        "UPDATE jobs SET lease_owner = $1, lease_until = $2, waits_for = NULL WHERE id IN \
         (SELECT id FROM jobs WHERE unusual_state = 'THROTTLED' AND flow_key = $3 \
         AND queue = $4 AND lease_owner IS NULL \
         ORDER BY priority DESC, submitted_ms, id LIMIT $5) \
         AND state = 'THROTTLED' AND lease_owner IS NULL RETURNING ",
        job_columns!()
    ))
    .bind(&c.owner)
    .bind(c.until_ms)
    .bind(gate)
    .bind(queue)
    .bind(free)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(job_row)
    .collect::<Result<Vec<_>, _>>()?;
    let n = i64::try_from(granted.len()).unwrap_or(i64::MAX);
    if kind == "rate" && interval_ms > 0.0 && n > 0 {
        let (_, next) = rate_starts(next_ms, interval_ms, now, n);
        sqlx::query("UPDATE flow_gates SET next_ms = $2 WHERE name = $1")
            .bind(gate)
            .bind(next)
            .execute(&mut **tx)
            .await?;
    }
    let ids: Vec<&str> = granted.iter().map(|r| r.job.id.as_str()).collect();
    sqlx::query(
        "INSERT INTO flow_slots (job_id, gate, taken_ms) \
         SELECT id, $2, $3 FROM UNNEST($1::text[]) AS g(id) ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(gate)
    .bind(c.now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(granted)
}

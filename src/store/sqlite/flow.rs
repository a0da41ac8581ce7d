//! Flow control: a job's gates taken, or the job held THROTTLED; held jobs granted their places
//! as the gates free. Every call is one IMMEDIATE transaction: SQLite's one writer makes each
//! gate's check and take one step.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::columns::{job_row, Binder};
use super::rates::override_at;
use super::Store;
use crate::store::flow::{
    behind, grants_allowed, in_force, key_held, rate_starts, take_rate, unlimited, Admission,
    Admitting, Gate, Rule, IN_FLIGHT_FOR_MS,
};
use crate::store::requests::Claim;
use crate::store::{job_columns, live_row, JobRow, StoreError};

impl Store {
    pub(crate) async fn admit_flow(&self, a: &Admitting) -> Result<Admission, StoreError> {
        let a = a.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let verdict = admit(&tx, &a)?;
                tx.commit()?;
                Ok(verdict)
            })
            .await
    }

    pub(crate) async fn held_gates(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        let queue = queue.to_string();
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT DISTINCT flow_key FROM jobs WHERE state = 'THROTTLED' AND queue = ?1 \
                     AND lease_owner IS NULL AND flow_key IS NOT NULL",
                )?;
                let rows = st.query_map([queue], |r| r.get(0))?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn release_held(
        &self,
        gate: &str,
        queue: &str,
        c: &Claim,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let (gate, queue, c) = (gate.to_string(), queue.to_string(), c.clone());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let rows = release(&tx, &gate, &queue, &c, limit)?;
                tx.commit()?;
                Ok(rows)
            })
            .await
    }
}

/// Writes the gate's rule (as this worker's config says it) and returns its next start.
fn lock_gate(tx: &Transaction<'_>, g: &Gate) -> rusqlite::Result<f64> {
    tx.prepare_cached(
        "INSERT INTO flow_gates (name, kind, interval_ms, slots) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
         interval_ms = excluded.interval_ms, slots = excluded.slots RETURNING next_ms",
    )?
    .query_row(
        params![g.name, g.rule.kind(), g.rule.interval_ms(), g.rule.slots()],
        |r| r.get(0),
    )
}

fn admit(tx: &Transaction<'_>, a: &Admitting) -> rusqlite::Result<Admission> {
    let now = a.now_ms as f64;
    let mut takes: Vec<(Gate, Option<f64>)> = Vec::with_capacity(a.gates.len());
    let mut held = None;
    for g in &a.gates {
        let next = lock_gate(tx, g)?;
        // An operator's rate, read now that the gate is ours, is the rule in force.
        let g = in_force(g, override_at(tx, &g.name)?);
        // Its own place (granted, or an earlier delivery's): used now.
        let mine = tx
            .prepare_cached("UPDATE flow_slots SET used = 1 WHERE job_id = ?1 AND gate = ?2")?
            .execute(params![a.job.id, g.name])?;
        if mine > 0 || unlimited(&g) {
            continue;
        }
        let waiting: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'THROTTLED' AND flow_key = ?1 \
                 AND lease_owner IS NULL AND id <> ?2)",
            )?
            .query_row(params![g.name, a.job.id], |r| r.get(0))?;
        if waiting {
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
                let (taken, holder): (i64, Option<String>) = tx
                    .prepare_cached("SELECT COUNT(*), MIN(job_id) FROM flow_slots WHERE gate = ?1")?
                    .query_row([&g.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
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
        hold(tx, a, &g, &reason)?;
        return Ok(Admission::Held { reason });
    }
    for (g, next) in takes {
        take(tx, &a.job.id, &g, next, a.now_ms)?;
    }
    // A redelivery of a job held here (its worker died before the ack) starts now: no
    // releaser may grant and publish it a second time.
    tx.prepare_cached(
        "UPDATE jobs SET state = 'PENDING', waits_for = NULL \
         WHERE id = ?1 AND state = 'THROTTLED' AND lease_owner IS NULL",
    )?
    .execute([&a.job.id])?;
    Ok(Admission::Go)
}

/// Takes job `id`'s place at `g`: its slot row, and a rate's next start.
fn take(
    tx: &Transaction<'_>,
    id: &str,
    g: &Gate,
    next: Option<f64>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    if let Some(next) = next {
        tx.prepare_cached("UPDATE flow_gates SET next_ms = ?2 WHERE name = ?1")?
            .execute(params![g.name, next])?;
    }
    tx.prepare_cached(
        "INSERT INTO flow_slots (job_id, gate, taken_ms, used) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![id, g.name, now_ms])?;
    Ok(())
}

/// Records the job THROTTLED at gate `g` with `reason` (a final row is left as it is), with a
/// THROTTLED history row.
fn hold(tx: &Transaction<'_>, a: &Admitting, g: &Gate, reason: &str) -> rusqlite::Result<()> {
    let (job, o) = (&a.job, &a.options);
    let mut upsert = tx.prepare_cached(concat!(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, \
         state, worker, submitted_ms, deliveries, eta_ms, expires_ms, \
         time_limit_ms, soft_time_limit_ms, reply_to, priority, flow_key, waits_for) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'THROTTLED', ?9, ?10, 1, ?11, \
         ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
         ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, \
         state = 'THROTTLED', worker = excluded.worker, eta_ms = excluded.eta_ms, \
         expires_ms = excluded.expires_ms, time_limit_ms = excluded.time_limit_ms, \
         soft_time_limit_ms = excluded.soft_time_limit_ms, reply_to = excluded.reply_to, \
         priority = excluded.priority, flow_key = excluded.flow_key, \
         waits_for = excluded.waits_for, lease_owner = NULL, lease_until = NULL",
        live_row!()
    ))?;
    let changed = Binder::new(&mut upsert)
        .job(job)?
        .bind(&a.worker)?
        .bind(job.submitted_ms)?
        .bind(o.eta_ms)?
        .bind(o.expires_ms)?
        .bind(o.time_limit_ms)?
        .bind(o.soft_time_limit_ms)?
        .bind(&o.reply_to)?
        .bind(o.priority)?
        .bind(&g.name)?
        .bind(reason)?
        .execute()?;
    drop(upsert);
    if changed > 0 {
        tx.prepare_cached(
            "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
             VALUES (?1, 'THROTTLED', ?2, ?3, ?4)",
        )?
        .execute(params![job.id, a.worker, a.now_ms, reason])?;
    }
    Ok(())
}

fn release(
    tx: &Transaction<'_>,
    gate: &str,
    queue: &str,
    c: &Claim,
    limit: i64,
) -> rusqlite::Result<Vec<JobRow>> {
    let row: Option<(String, f64, i64, f64)> = tx
        .prepare_cached("SELECT kind, interval_ms, slots, next_ms FROM flow_gates WHERE name = ?1")?
        .query_row([gate], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((kind, mut interval_ms, slots, next_ms)) = row else {
        return Ok(Vec::new());
    };
    if let Some((over, _)) = override_at(tx, gate)? {
        interval_ms = over;
    }
    let now = c.now_ms as f64;
    let free = if kind == "rate" && interval_ms <= 0.0 {
        // No limit in force (an operator's "off", or the config's none): all go.
        limit
    } else if kind == "rate" {
        let in_flight: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM flow_slots WHERE gate = ?1 AND used = 0 AND taken_ms > ?2",
            )?
            .query_row(params![gate, c.now_ms - IN_FLIGHT_FOR_MS], |r| r.get(0))?;
        let most = limit.min(grants_allowed(interval_ms, in_flight));
        rate_starts(next_ms, interval_ms, now, most).0
    } else {
        let taken: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM flow_slots WHERE gate = ?1")?
            .query_row([gate], |r| r.get(0))?;
        (slots - taken).clamp(0, limit)
    };
    if free == 0 {
        return Ok(Vec::new());
    }
    let granted: Vec<JobRow> = tx
        .prepare_cached(concat!(
            "UPDATE jobs SET lease_owner = ?1, lease_until = ?2, waits_for = NULL WHERE id IN \
             (SELECT id FROM jobs WHERE state = 'THROTTLED' AND flow_key = ?3 AND queue = ?4 \
             AND lease_owner IS NULL ORDER BY priority DESC, submitted_ms, id LIMIT ?5) \
             RETURNING ",
            job_columns!()
        ))?
        .query_map(params![c.owner, c.until_ms, gate, queue, free], job_row)?
        .collect::<rusqlite::Result<_>>()?;
    let n = i64::try_from(granted.len()).unwrap_or(i64::MAX);
    if kind == "rate" && interval_ms > 0.0 && n > 0 {
        let (_, next) = rate_starts(next_ms, interval_ms, now, n);
        tx.prepare_cached("UPDATE flow_gates SET next_ms = ?2 WHERE name = ?1")?
            .execute(params![gate, next])?;
    }
    let mut slot = tx.prepare_cached(
        "INSERT INTO flow_slots (job_id, gate, taken_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
    )?;
    for row in &granted {
        slot.execute(params![row.job.id, gate, c.now_ms])?;
    }
    Ok(granted)
}

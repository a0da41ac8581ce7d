//! Schedules: a tick's firings with their jobs in one transaction, their state, pause, the
//! sweep of firings not published (see `store::firings`).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::columns::job_row;
use super::{commit, counts, Store};
use crate::store::firings::{pending_row, RUNNING_LOOKBACK};
use crate::store::{job_columns, Fired, Firing, FiringRow, JobRow, ScheduleState, StoreError};

impl Store {
    pub(crate) async fn fire(&self, firing: &Firing) -> Result<Fired, StoreError> {
        let f = firing.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = crate::store::now_ms();
                if let Some(from) = f.from_cursor {
                    let moved = tx
                        .prepare_cached(
                            "UPDATE schedules SET cursor_ms = ?1, missed = missed + ?2, \
                             changed_ms = ?3 WHERE name = ?4 AND cursor_ms = ?5 AND paused = 0",
                        )?
                        .execute(params![
                            f.to_cursor,
                            i64::try_from(f.missed).unwrap_or(i64::MAX),
                            now,
                            f.schedule,
                            from
                        ])?;
                    if moved == 0 {
                        return Ok(Fired::Raced);
                    }
                }
                let mut jobs = Vec::new();
                for (slot, how, job) in &f.slots {
                    let overlapped = f.overlap_skip && previous_runs(&tx, &f.schedule)?;
                    let job_id = (!overlapped).then_some(job.id.as_str());
                    let how = if overlapped { "overlapped" } else { how };
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO schedule_firings \
                             (schedule, slot_ms, how, job_id, fired_ms, send_until) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (schedule, slot_ms) WHERE how <> 'manual' DO NOTHING",
                        )?
                        .execute(params![f.schedule, slot, how, job_id, now, f.send_until])?;
                    if inserted == 0 || overlapped {
                        continue;
                    }
                    commit::insert_pending(&tx, std::slice::from_ref(job))?;
                    commit::insert_history(&tx, &[pending_row(&f.schedule, *slot, how, job)])?;
                    jobs.push(job.clone());
                }
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(Fired::Jobs(jobs))
            })
            .await
    }

    pub(crate) async fn schedule_states(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Vec<ScheduleState>, StoreError> {
        let names = names.to_vec();
        self.pool
            .run(move |conn| {
                let known = read_states(conn)?;
                if names.iter().all(|n| known.iter().any(|s| &s.name == n)) {
                    return Ok(known);
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for name in &names {
                    tx.prepare_cached(
                        "INSERT INTO schedules (name, cursor_ms, changed_ms) VALUES (?1, ?2, ?2) \
                         ON CONFLICT (name) DO NOTHING",
                    )?
                    .execute(params![name, now])?;
                }
                tx.commit()?;
                read_states(conn)
            })
            .await
    }

    pub(crate) async fn firings(
        &self,
        schedule: &str,
        limit: i64,
    ) -> Result<Vec<FiringRow>, StoreError> {
        let schedule = schedule.to_string();
        let limit = if limit <= 0 { -1 } else { limit };
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT f.slot_ms, f.how, f.job_id, f.fired_ms, j.state \
                     FROM schedule_firings f LEFT JOIN jobs j ON j.id = f.job_id \
                     WHERE f.schedule = ?1 ORDER BY f.seq DESC LIMIT ?2",
                )?;
                let rows = st.query_map(params![schedule, limit], firing_row)?;
                rows.collect()
            })
            .await
    }

    pub(crate) async fn set_paused(
        &self,
        schedule: &str,
        paused: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let schedule = schedule.to_string();
        self.pool
            .run(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO schedules (name, cursor_ms, paused, changed_ms) \
                     VALUES (?1, ?2, ?3, ?2) ON CONFLICT (name) DO UPDATE SET \
                     paused = excluded.paused, changed_ms = excluded.changed_ms, \
                     cursor_ms = CASE WHEN excluded.paused THEN cursor_ms \
                     ELSE MAX(cursor_ms, excluded.cursor_ms) END",
                )?
                .execute(params![schedule, now, paused])
                .map(drop)
            })
            .await
    }

    pub(crate) async fn firings_sent(&self, jobs: &[String], now: i64) -> Result<(), StoreError> {
        let ids = serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into());
        self.pool
            .run(move |conn| {
                conn.prepare_cached(
                    "UPDATE schedule_firings SET sent_ms = ?1 \
                     WHERE job_id IN (SELECT value FROM json_each(?2)) AND sent_ms IS NULL",
                )?
                .execute(params![now, ids])
                .map(drop)
            })
            .await
    }

    pub(crate) async fn claim_unsent(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.pool
            .run(move |conn| {
                // Nearly always none: a read, so that sweeping takes no write lock for nothing.
                let waiting = conn
                    .prepare_cached(
                        "SELECT 1 FROM schedule_firings WHERE sent_ms IS NULL AND send_until < ?1 \
                         LIMIT 1",
                    )?
                    .query_row([now], |_| Ok(()))
                    .optional()?;
                if waiting.is_none() {
                    return Ok(Vec::new());
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // A firing whose job is no longer PENDING was published (or revoked): done.
                tx.prepare_cached(
                    "UPDATE schedule_firings SET sent_ms = send_until \
                     WHERE sent_ms IS NULL AND send_until < ?1 AND job_id IN \
                     (SELECT id FROM jobs WHERE state <> 'PENDING')",
                )?
                .execute([now])?;
                let rows = {
                    let mut st = tx.prepare_cached(
                        "UPDATE schedule_firings SET send_until = ?1 WHERE seq IN \
                         (SELECT seq FROM schedule_firings WHERE sent_ms IS NULL \
                         AND send_until < ?2 AND job_id IS NOT NULL LIMIT ?3) \
                         RETURNING job_id",
                    )?;
                    let ids =
                        st.query_map(params![until, now, limit], |r| r.get::<_, String>(0))?;
                    let ids: Vec<String> = ids.collect::<rusqlite::Result<_>>()?;
                    let mut get = tx.prepare_cached(concat!(
                        "SELECT ",
                        job_columns!(),
                        " FROM jobs WHERE id = ?1 AND state = 'PENDING'"
                    ))?;
                    let mut rows = Vec::with_capacity(ids.len());
                    for id in ids {
                        if let Some(row) = get.query_row([&id], job_row).optional()? {
                            rows.push(row);
                        }
                    }
                    rows
                };
                tx.commit()?;
                Ok(rows)
            })
            .await
    }
}

/// Whether a job of the newest [`RUNNING_LOOKBACK`] firings of `schedule` has not ended.
fn previous_runs(conn: &Connection, schedule: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(concat!(
        "SELECT 1 FROM (SELECT job_id FROM schedule_firings WHERE schedule = ?1 \
         AND job_id IS NOT NULL ORDER BY seq DESC LIMIT ?2) f JOIN jobs j ON j.id = f.job_id \
         WHERE NOT ",
        crate::store::is_final_sql!("j.state"),
        " LIMIT 1"
    ))?
    .query_row(params![schedule, RUNNING_LOOKBACK], |_| Ok(()))
    .optional()
    .map(|found| found.is_some())
}

fn read_states(conn: &Connection) -> rusqlite::Result<Vec<ScheduleState>> {
    // The newest firing of each: one index seek per schedule (schedule_firings_newest).
    let mut st = conn.prepare_cached(
        "SELECT s.name, s.cursor_ms, s.paused, s.missed, \
         f.slot_ms, f.how, f.job_id, f.fired_ms, j.state \
         FROM schedules s LEFT JOIN schedule_firings f ON f.seq = \
         (SELECT MAX(seq) FROM schedule_firings WHERE schedule = s.name) \
         LEFT JOIN jobs j ON j.id = f.job_id ORDER BY s.name",
    )?;
    let rows = st.query_map([], |r| {
        let last = match r.get::<_, Option<i64>>(4)? {
            Some(slot_ms) => Some(FiringRow {
                slot_ms,
                how: r.get(5)?,
                job_id: r.get(6)?,
                fired_ms: r.get(7)?,
                state: r.get(8)?,
            }),
            None => None,
        };
        Ok(ScheduleState {
            name: r.get(0)?,
            cursor_ms: r.get(1)?,
            paused: r.get(2)?,
            missed: r.get(3)?,
            last,
        })
    })?;
    rows.collect()
}

fn firing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FiringRow> {
    Ok(FiringRow {
        slot_ms: r.get(0)?,
        how: r.get(1)?,
        job_id: r.get(2)?,
        fired_ms: r.get(3)?,
        state: r.get(4)?,
    })
}

//! Schedules: a tick's firings with their jobs in one transaction, their state, pause, the
//! sweep of firings not published (see `store::firings`).

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{commit, Store};
use crate::store::firings::{pending_row, RUNNING_LOOKBACK};
use crate::store::{job_columns, Fired, Firing, FiringRow, JobRow, ScheduleState, StoreError};

impl Store {
    pub(crate) async fn fire(&self, f: &Firing) -> Result<Fired, StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let now = crate::store::now_ms();
            if let Some(from) = f.from_cursor {
                // The row lock: a racing tick waits here, then finds the cursor moved.
                let moved = sqlx::query(
                    "UPDATE schedules SET cursor_ms = $1, missed = missed + $2, changed_ms = $3 \
                     WHERE name = $4 AND cursor_ms = $5 AND NOT paused",
                )
                .bind(f.to_cursor)
                .bind(i64::try_from(f.missed).unwrap_or(i64::MAX))
                .bind(now)
                .bind(&f.schedule)
                .bind(from)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 0 {
                    return Ok(Fired::Raced);
                }
            }
            let mut jobs = Vec::new();
            for (slot, how, job) in &f.slots {
                let overlapped = f.overlap_skip && previous_runs(&mut tx, &f.schedule).await?;
                let job_id = (!overlapped).then_some(job.id.as_str());
                let how = if overlapped { "overlapped" } else { how };
                let inserted = sqlx::query(
                    "INSERT INTO schedule_firings \
                     (schedule, slot_ms, how, job_id, fired_ms, send_until) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (schedule, slot_ms) WHERE how <> 'manual' DO NOTHING",
                )
                .bind(&f.schedule)
                .bind(slot)
                .bind(how)
                .bind(job_id)
                .bind(now)
                .bind(f.send_until)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 || overlapped {
                    continue;
                }
                commit::insert_pending(&mut tx, std::slice::from_ref(job)).await?;
                commit::insert_history(&mut tx, &[pending_row(&f.schedule, *slot, how, job)])
                    .await?;
                jobs.push(job.clone());
            }
            tx.commit().await?;
            Ok(Fired::Jobs(jobs))
        };
        run.await.map_err(self.fail())
    }

    pub(crate) async fn schedule_states(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<Vec<ScheduleState>, StoreError> {
        let known = self.read_states().await?;
        if names.iter().all(|n| known.iter().any(|s| &s.name == n)) {
            return Ok(known);
        }
        sqlx::query(
            "INSERT INTO schedules (name, cursor_ms, changed_ms) \
             SELECT name, $2, $2 FROM UNNEST($1::text[]) AS n(name) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(names)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        self.read_states().await
    }

    async fn read_states(&self) -> Result<Vec<ScheduleState>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.name, s.cursor_ms, s.paused, s.missed, \
             f.slot_ms, f.how, f.job_id, f.fired_ms, j.state \
             FROM schedules s LEFT JOIN LATERAL (SELECT * FROM schedule_firings \
             WHERE schedule = s.name ORDER BY seq DESC LIMIT 1) f ON true \
             LEFT JOIN jobs j ON j.id = f.job_id ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        let read = |r: &PgRow| -> Result<ScheduleState, sqlx::Error> {
            let last = match r.try_get::<Option<i64>, _>(4)? {
                Some(slot_ms) => Some(FiringRow {
                    slot_ms,
                    how: r.try_get(5)?,
                    job_id: r.try_get(6)?,
                    fired_ms: r.try_get(7)?,
                    state: r.try_get(8)?,
                }),
                None => None,
            };
            Ok(ScheduleState {
                name: r.try_get(0)?,
                cursor_ms: r.try_get(1)?,
                paused: r.try_get(2)?,
                missed: r.try_get(3)?,
                last,
            })
        };
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(self.fail())
    }

    pub(crate) async fn firings(
        &self,
        schedule: &str,
        limit: i64,
    ) -> Result<Vec<FiringRow>, StoreError> {
        let limit = if limit <= 0 { None } else { Some(limit) };
        let rows = sqlx::query(
            "SELECT f.slot_ms, f.how, f.job_id, f.fired_ms, j.state \
             FROM schedule_firings f LEFT JOIN jobs j ON j.id = f.job_id \
             WHERE f.schedule = $1 ORDER BY f.seq DESC LIMIT $2",
        )
        .bind(schedule)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        rows.iter()
            .map(|r| {
                Ok(FiringRow {
                    slot_ms: r.try_get(0)?,
                    how: r.try_get(1)?,
                    job_id: r.try_get(2)?,
                    fired_ms: r.try_get(3)?,
                    state: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.fail())
    }

    pub(crate) async fn set_paused(
        &self,
        schedule: &str,
        paused: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schedules (name, cursor_ms, paused, changed_ms) VALUES ($1, $2, $3, $2) \
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, \
             changed_ms = excluded.changed_ms, cursor_ms = CASE WHEN excluded.paused \
             THEN schedules.cursor_ms ELSE GREATEST(schedules.cursor_ms, excluded.cursor_ms) END",
        )
        .bind(schedule)
        .bind(now)
        .bind(paused)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(self.fail())
    }

    pub(crate) async fn firings_sent(&self, jobs: &[String], now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE schedule_firings SET sent_ms = $1 \
             WHERE job_id = ANY($2) AND sent_ms IS NULL",
        )
        .bind(now)
        .bind(jobs)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(self.fail())
    }

    pub(crate) async fn claim_unsent(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        // A firing whose job is no longer PENDING was published (or revoked): done.
        sqlx::query(
            "UPDATE schedule_firings SET sent_ms = send_until \
             WHERE sent_ms IS NULL AND send_until < $1 AND job_id IN \
             (SELECT id FROM jobs WHERE state <> 'PENDING')",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.fail())?;
        // One statement: a racing sweep waits for each row's lock, then finds it claimed.
        let q = sqlx::query(concat!(
            "WITH claimed AS (UPDATE schedule_firings SET send_until = $1 WHERE seq IN \
             (SELECT seq FROM schedule_firings WHERE sent_ms IS NULL AND send_until < $2 \
             AND job_id IS NOT NULL LIMIT $3) AND sent_ms IS NULL AND send_until < $2 \
             RETURNING job_id) \
             SELECT ",
            job_columns!(),
            " FROM jobs WHERE state = 'PENDING' AND id IN (SELECT job_id FROM claimed)"
        ))
        .bind(until)
        .bind(now)
        .bind(limit);
        self.fetch_jobs(q).await
    }
}

/// Whether a job of the newest [`RUNNING_LOOKBACK`] firings of `schedule` has not ended.
async fn previous_runs(conn: &mut PgConnection, schedule: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar(concat!(
        "SELECT 1 FROM (SELECT job_id FROM schedule_firings WHERE schedule = $1 \
         AND job_id IS NOT NULL ORDER BY seq DESC LIMIT $2) f JOIN jobs j ON j.id = f.job_id \
         WHERE NOT ",
        crate::store::is_final_sql!("j.state"),
        " LIMIT 1"
    ))
    .bind(schedule)
    .bind(RUNNING_LOOKBACK)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

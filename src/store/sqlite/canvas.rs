//! What the store keeps of a job's message beyond its task and arguments (its options, and
//! what Celery's canvas puts in it), and the jobs a final state starts or ends with it, written
//! in that final state's transaction.

use rusqlite::{params, Connection};

use super::columns::Binder;
use crate::store::batch::Spawn;
use crate::store::{NewJob, Spawned, PENDING};

/// Keeps what `job`'s message says beyond its task and arguments, each where its row keeps
/// nothing yet: the first record of a message wins, as its first state does. Only for a job whose
/// message has something to keep: a plain job's row keeps its NULLs, at no cost.
pub(super) fn keep_options(conn: &Connection, job: &NewJob) -> rusqlite::Result<usize> {
    let o = &job.options;
    let mut st = conn.prepare_cached(
        "UPDATE jobs SET eta_ms = COALESCE(eta_ms, ?1), expires_ms = COALESCE(expires_ms, ?2), \
         time_limit_ms = COALESCE(time_limit_ms, ?3), \
         soft_time_limit_ms = COALESCE(soft_time_limit_ms, ?4), \
         reply_to = COALESCE(reply_to, ?5), embed = COALESCE(embed, ?6), \
         group_id = COALESCE(group_id, ?7), group_index = COALESCE(group_index, ?8), \
         parent_id = COALESCE(parent_id, ?9), root_id = COALESCE(root_id, ?10) WHERE id = ?11",
    )?;
    Binder::new(&mut st)
        .bind(o.eta_ms)?
        .bind(o.expires_ms)?
        .bind(o.time_limit_ms)?
        .bind(o.soft_time_limit_ms)?
        .bind(o.reply_to.as_deref())?
        .bind(o.embed.as_deref())?
        .bind(o.group_id.as_deref())?
        .bind(o.group_index)?
        .bind(o.parent_id.as_deref())?
        .bind(o.root_id.as_deref())?
        .bind(&job.id)?
        .execute()
}

/// A job that a final state starts or ends with it: inserted (with its history row, and an
/// outbox row to publish it, or to send the rpc:// reply of one ended at once) only if its
/// parent's row holds that very end, and only if no row of that id is there yet.
pub(super) fn insert_spawned(conn: &Connection, spawn: &Spawn<'_>) -> rusqlite::Result<()> {
    let Spawned {
        job,
        state,
        error,
        why,
    } = spawn.spawned;
    let finished = (*state != PENDING).then_some(spawn.at);
    let mut st = conn.prepare_cached(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
         submitted_ms, error, finished_ms) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs \
         WHERE id = ? AND state = ? AND worker = ? AND finished_ms = ?) \
         ON CONFLICT (id) DO NOTHING",
    )?;
    let inserted = Binder::new(&mut st)
        .job(job)?
        .bind(job.batch.as_deref())?
        .bind(*state)?
        .bind(spawn.at)?
        .bind(error.as_deref())?
        .bind(finished)?
        .bind(spawn.parent)?
        .bind(spawn.state)?
        .bind(spawn.worker)?
        .bind(spawn.at)?
        .execute()?;
    if inserted == 0 {
        return Ok(());
    }
    keep_options(conn, job)?;
    conn.prepare_cached(
        "INSERT INTO job_events (job_id, state, worker, at_ms, detail) VALUES (?1, ?2, '', ?3, ?4)",
    )?
    .execute(params![&job.id, state, spawn.at, why])?;
    if *state == PENDING || job.options.reply_to.is_some() {
        conn.prepare_cached(
            "INSERT INTO job_outbox (job_id, due_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![&job.id, spawn.at])?;
    }
    Ok(())
}

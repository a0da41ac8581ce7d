//! What the store keeps of a job's message beyond its task and arguments (its options, and
//! what Celery's canvas puts in it), and the jobs a final state starts or ends with it, written
//! in that final state's transaction.

use sqlx::PgConnection;

use super::columns::bind_job;
use crate::store::batch::Spawn;
use crate::store::{NewJob, Spawned, PENDING};

/// Keeps what the messages of `jobs` say beyond task and arguments, each where a row keeps
/// nothing yet (the first record of a message wins, as its first state does): one statement.
/// Called only with jobs whose message has something to keep.
pub(super) async fn keep_options(
    conn: &mut PgConnection,
    jobs: &[&NewJob],
) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let o = |f: fn(&NewJob) -> Option<i64>| jobs.iter().map(|j| f(j)).collect::<Vec<_>>();
    let t = |f: fn(&NewJob) -> Option<&str>| jobs.iter().map(|j| f(j)).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE jobs j SET eta_ms = COALESCE(j.eta_ms, o.eta_ms), \
         expires_ms = COALESCE(j.expires_ms, o.expires_ms), \
         time_limit_ms = COALESCE(j.time_limit_ms, o.time_limit_ms), \
         soft_time_limit_ms = COALESCE(j.soft_time_limit_ms, o.soft_time_limit_ms), \
         reply_to = COALESCE(j.reply_to, o.reply_to), embed = COALESCE(j.embed, o.embed), \
         group_id = COALESCE(j.group_id, o.group_id), \
         group_index = COALESCE(j.group_index, o.group_index), \
         parent_id = COALESCE(j.parent_id, o.parent_id), \
         root_id = COALESCE(j.root_id, o.root_id) \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
         $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[]) \
         AS o(id, eta_ms, expires_ms, time_limit_ms, soft_time_limit_ms, reply_to, embed, \
         group_id, group_index, parent_id, root_id) WHERE j.id = o.id",
    )
    .bind(t(|j| Some(j.id.as_str())))
    .bind(o(|j| j.options.eta_ms))
    .bind(o(|j| j.options.expires_ms))
    .bind(o(|j| j.options.time_limit_ms))
    .bind(o(|j| j.options.soft_time_limit_ms))
    .bind(t(|j| j.options.reply_to.as_deref()))
    .bind(t(|j| j.options.embed.as_deref()))
    .bind(t(|j| j.options.group_id.as_deref()))
    .bind(o(|j| j.options.group_index))
    .bind(t(|j| j.options.parent_id.as_deref()))
    .bind(t(|j| j.options.root_id.as_deref()))
    .execute(conn)
    .await
    .map(drop)
}

/// A job that a final state starts or ends with it: inserted (with its history row, and an
/// outbox row to publish it, or to send the rpc:// reply of one ended at once) only if its
/// parent's row holds that very end, and only if no row of that id is there yet.
pub(super) async fn insert_spawned(
    conn: &mut PgConnection,
    spawn: &Spawn<'_>,
) -> Result<(), sqlx::Error> {
    let Spawned {
        job,
        state,
        error,
        why,
    } = spawn.spawned;
    let finished = (*state != PENDING).then_some(spawn.at);
    let q = sqlx::query(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
         submitted_ms, error, finished_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 WHERE EXISTS \
         (SELECT 1 FROM jobs WHERE id = $14 AND state = $15 AND worker = $16 \
         AND finished_ms = $17) \
         ON CONFLICT (id) DO NOTHING",
    );
    let inserted = bind_job(q, job)
        .bind(job.batch.as_deref())
        .bind(*state)
        .bind(spawn.at)
        .bind(error.as_deref())
        .bind(finished)
        .bind(spawn.parent)
        .bind(spawn.state)
        .bind(spawn.worker)
        .bind(spawn.at)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    keep_options(&mut *conn, &[job]).await?;
    sqlx::query(
        "INSERT INTO job_events (job_id, state, worker, at_ms, detail) VALUES ($1, $2, '', $3, $4)",
    )
    .bind(&job.id)
    .bind(*state)
    .bind(spawn.at)
    .bind(why)
    .execute(&mut *conn)
    .await?;
    if *state == PENDING || job.options.reply_to.is_some() {
        sqlx::query(
            "INSERT INTO job_outbox (job_id, due_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&job.id)
        .bind(spawn.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

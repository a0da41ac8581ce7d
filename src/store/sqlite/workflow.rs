//! Workflows: jobs published after others (WAITING, with their edges), the outbox of released
//! jobs, retries, and the edges a workflow's tree is read from. The release itself is a
//! trigger, in the transaction of every final state: `jobs_state_ends` on `jobs`, which for a
//! job that is someone's parent inserts into the view `job_ends`, whose INSTEAD OF trigger
//! `job_ends_release` does it (migration 0019_thin_triggers; 0011_workflows' `jobs_release`
//! before).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::columns::job_row;
use super::{commit, counts, Store};
use crate::store::batch::{self, FoldedHistory};
use crate::store::requests::{Claim, Retrying};
use crate::store::workflow::{id_taken, unknown_parents, AFTER};
use crate::store::{
    is_final, job_columns, Brief, Duplicate, Edge, JobRow, Linked, NewJob, StoreError, UniqueClaim,
    FAILURE, REVOKED, WAITING,
};

impl Store {
    pub(crate) async fn insert_waiting(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
        edges: &[(String, &'static str)],
        now_ms: i64,
    ) -> Result<Vec<Duplicate>, StoreError> {
        let (jobs, claims, edges) = (jobs.to_vec(), claims.to_vec(), edges.to_vec());
        self.pool
            .run(move |conn| {
                // IMMEDIATE: the parents' states read here stay true until the commit.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let states = states_of(&tx, edges.iter().map(|(p, _)| p))?;
                let missing: Vec<String> = (edges.iter().zip(&states))
                    .filter(|(_, state)| state.is_none())
                    .map(|((p, _), _)| p.clone())
                    .collect();
                if !missing.is_empty() {
                    return Ok(Err(unknown_parents(&missing)));
                }
                let taken = taken_ids(&tx, &jobs)?;
                if !taken.is_empty() {
                    return Ok(Err(id_taken(&taken)));
                }
                let duplicates = super::unique::take_keys(&tx, &claims, now_ms)?;
                let jobs: Vec<NewJob> = (jobs.into_iter())
                    .filter(|j| !duplicates.iter().any(|d| d.job_id == j.id))
                    .collect();
                let ids: Vec<&String> = jobs.iter().map(|j| &j.id).collect();
                commit::insert_waiting(&tx, &jobs)?;
                let detail = format!("waits for {} parent(s)", edges.len());
                commit::insert_history(&tx, &waiting_history(&jobs, &detail))?;
                {
                    let mut edge = tx.prepare_cached(
                        "INSERT INTO job_edges (child, parent, mode) VALUES (?1, ?2, ?3)",
                    )?;
                    for id in &ids {
                        for (parent, mode) in &edges {
                            edge.execute(params![id, parent, mode])?;
                        }
                    }
                    // Parents that ended already count at once: the release trigger, run for
                    // one of them (a no-op update of its state fires it), settles the new jobs
                    // by all their parents' rows. An `--after` parent that failed, if any, so
                    // that the revoke names it; else any that ended.
                    let failed = |(e, s): &(&(String, &str), &Option<String>)| {
                        e.1 == AFTER && matches!(s.as_deref(), Some(FAILURE | REVOKED))
                    };
                    let ended = |(_, s): &(&(String, &str), &Option<String>)| {
                        s.as_deref().is_some_and(is_final)
                    };
                    let pairs: Vec<_> = edges.iter().zip(&states).collect();
                    let touch = (pairs.iter().find(|p| failed(p)))
                        .or_else(|| pairs.iter().find(|p| ended(p)));
                    if let Some(((parent, _), _)) = touch {
                        tx.execute("UPDATE jobs SET state = state WHERE id = ?1", [parent])?;
                    }
                }
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(Ok(duplicates))
            })
            .await?
    }

    pub(crate) async fn insert_pairs(
        &self,
        firsts: &[NewJob],
        thens: &[NewJob],
    ) -> Result<(), StoreError> {
        let (firsts, thens) = (firsts.to_vec(), thens.to_vec());
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let all: Vec<NewJob> = firsts.iter().chain(&thens).cloned().collect();
                let taken = taken_ids(&tx, &all)?;
                if !taken.is_empty() {
                    return Ok(Err(id_taken(&taken)));
                }
                // The firsts are due now: PENDING with their outbox rows, which the caller
                // (or, should it die, a worker) publishes.
                commit::insert_pending(&tx, &firsts)?;
                commit::insert_history(&tx, &batch::published(&firsts))?;
                {
                    let mut due = tx.prepare_cached(
                        "INSERT INTO job_outbox (job_id, due_ms) VALUES (?1, ?2)",
                    )?;
                    for j in &firsts {
                        due.execute(params![j.id, j.submitted_ms])?;
                    }
                }
                commit::insert_waiting(&tx, &thens)?;
                commit::insert_history(&tx, &waiting_history(&thens, "waits for 1 parent(s)"))?;
                let mut edge = tx.prepare_cached(
                    "INSERT INTO job_edges (child, parent, mode) VALUES (?1, ?2, ?3)",
                )?;
                for (first, then) in firsts.iter().zip(&thens) {
                    edge.execute(params![then.id, first.id, AFTER])?;
                }
                drop(edge);
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
    }

    pub(crate) async fn claim_outbox(
        &self,
        c: &Claim,
        limit: i64,
        only: Option<Vec<String>>,
    ) -> Result<Vec<JobRow>, StoreError> {
        let c = c.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let ids: Vec<String> = match only {
                    None => {
                        let mut st = tx.prepare_cached(
                            "UPDATE job_outbox SET claimed_by = ?1, claim_until = ?2 \
                             WHERE job_id IN (SELECT job_id FROM job_outbox \
                             WHERE claim_until IS NULL OR claim_until <= ?3 \
                             ORDER BY due_ms LIMIT ?4) RETURNING job_id",
                        )?;
                        let rows = st
                            .query_map(params![c.owner, c.until_ms, c.now_ms, limit], |r| {
                                r.get(0)
                            })?;
                        rows.collect::<rusqlite::Result<_>>()?
                    }
                    Some(only) => {
                        let mut st = tx.prepare_cached(
                            "UPDATE job_outbox SET claimed_by = ?1, claim_until = ?2 \
                             WHERE job_id = ?3 AND (claim_until IS NULL OR claim_until <= ?4) \
                             RETURNING job_id",
                        )?;
                        let mut ids = Vec::new();
                        for id in only {
                            let claimed = st
                                .query_row(params![c.owner, c.until_ms, id, c.now_ms], |r| r.get(0))
                                .optional()?;
                            ids.extend(claimed);
                        }
                        ids
                    }
                };
                let rows = read_jobs(&tx, &ids)?;
                tx.commit()?;
                Ok(rows)
            })
            .await
    }

    pub(crate) async fn outbox_waiting(&self, now_ms: i64) -> Result<bool, StoreError> {
        self.pool
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM job_outbox WHERE claim_until IS NULL OR claim_until <= ?1 \
                     LIMIT 1",
                )?
                .exists([now_ms])
            })
            .await
    }

    pub(crate) async fn outbox_published(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.pool
            .run(move |conn| {
                conn.prepare_cached("DELETE FROM job_outbox WHERE job_id = ?1")?
                    .execute([id])
                    .map(drop)
            })
            .await
    }

    pub(crate) async fn retry(&self, r: &Retrying) -> Result<(), StoreError> {
        let r = r.clone();
        self.pool
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let state: Option<String> = tx
                    .query_row("SELECT state FROM jobs WHERE id = ?1", [&r.id], |row| {
                        row.get(0)
                    })
                    .optional()?;
                let retried_as: Option<String> = tx
                    .query_row(
                        "SELECT retry_id FROM job_retries WHERE job_id = ?1",
                        [&r.id],
                        |row| row.get(0),
                    )
                    .optional()?;
                if retried_as.is_some() || !matches!(state.as_deref(), Some(FAILURE | REVOKED)) {
                    return Ok(Err(r.refusal(state.as_deref(), retried_as.as_deref())));
                }
                let claims: Vec<UniqueClaim> = r.claim.iter().cloned().collect();
                if let Some(d) = super::unique::take_keys(&tx, &claims, r.at_ms)?.pop() {
                    return Ok(Err(r.held(&d)));
                }
                retry(&tx, &r)?;
                counts::fold_counts_if_long(&tx)?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?
    }

    pub(crate) async fn edges_touching(&self, ids: &[String]) -> Result<Vec<Edge>, StoreError> {
        let ids = ids.to_vec();
        self.pool
            .run(move |conn| {
                let mut st = conn.prepare_cached(
                    "SELECT child, parent, mode FROM job_edges WHERE child = ?1 \
                     UNION SELECT child, parent, mode FROM job_edges WHERE parent = ?1 \
                     UNION SELECT id, parent_id, 'canvas' FROM jobs WHERE parent_id = ?1 \
                     UNION SELECT id, parent_id, 'canvas' FROM jobs \
                     WHERE id = ?1 AND parent_id IS NOT NULL",
                )?;
                let mut out = Vec::new();
                for id in &ids {
                    let rows = st.query_map([id], |r| {
                        Ok(Edge {
                            child: r.get(0)?,
                            parent: r.get(1)?,
                            mode: r.get(2)?,
                        })
                    })?;
                    for e in rows {
                        out.push(e?);
                    }
                }
                Ok(out)
            })
            .await
    }

    pub(crate) async fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        let ids = ids.to_vec();
        self.pool
            .run(move |conn| {
                let mut st =
                    conn.prepare_cached("SELECT id, task, state, error FROM jobs WHERE id = ?1")?;
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    let brief = st
                        .query_row([id], |r| {
                            Ok(Brief {
                                id: r.get(0)?,
                                task: r.get(1)?,
                                state: r.get(2)?,
                                error: r.get(3)?,
                            })
                        })
                        .optional()?;
                    out.extend(brief);
                }
                Ok(out)
            })
            .await
    }

    pub(crate) async fn parents_summary(
        &self,
        child: &str,
        shown: i64,
    ) -> Result<(Vec<(String, i64)>, Vec<Linked>), StoreError> {
        let child = child.to_string();
        self.pool
            .run(move |conn| {
                let by_state = conn
                    .prepare_cached(
                        "SELECT j.state, count(*) FROM job_edges e JOIN jobs j ON j.id = e.parent \
                         WHERE e.child = ?1 GROUP BY j.state ORDER BY j.state",
                    )?
                    .query_map([&child], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let first = conn
                    .prepare_cached(
                        "SELECT e.mode, j.id, j.task, j.state, j.error \
                         FROM job_edges e JOIN jobs j ON j.id = e.parent WHERE e.child = ?1 \
                         ORDER BY j.state IN ('SUCCESS', 'FAILURE', 'REVOKED'), j.id LIMIT ?2",
                    )?
                    .query_map(params![child, shown], |r| {
                        Ok(Linked {
                            mode: r.get(0)?,
                            job: Brief {
                                id: r.get(1)?,
                                task: r.get(2)?,
                                state: r.get(3)?,
                                error: r.get(4)?,
                            },
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((by_state, first))
            })
            .await
    }

    pub(crate) async fn retries_of(
        &self,
        id: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let id = id.to_string();
        self.pool
            .run(move |conn| {
                conn.query_row(
                    "SELECT (SELECT job_id FROM job_retries WHERE retry_id = ?1), \
                     (SELECT retry_id FROM job_retries WHERE job_id = ?1)",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
    }
}

/// Those of `jobs`' ids the store has already.
fn taken_ids(conn: &Connection, jobs: &[NewJob]) -> rusqlite::Result<Vec<String>> {
    let mut there = conn.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?;
    let mut taken = Vec::new();
    for j in jobs {
        if there.exists([&j.id])? {
            taken.push(j.id.clone());
        }
    }
    Ok(taken)
}

/// The WAITING history rows of new jobs, each saying what it waits for.
fn waiting_history<'a>(jobs: &'a [NewJob], detail: &'a str) -> Vec<FoldedHistory<'a>> {
    (jobs.iter())
        .map(|j| FoldedHistory {
            job_id: &j.id,
            state: WAITING,
            worker: "",
            at_ms: j.submitted_ms,
            detail: Some(detail.into()),
            later: None,
        })
        .collect()
}

/// The state of each of `ids`, in order (`None`: no such job).
fn states_of<'a>(
    conn: &Connection,
    ids: impl Iterator<Item = &'a String>,
) -> rusqlite::Result<Vec<Option<String>>> {
    let mut state = conn.prepare_cached("SELECT state FROM jobs WHERE id = ?1")?;
    ids.map(|id| state.query_row([id], |r| r.get(0)).optional())
        .collect()
}

/// The rows of jobs `ids`, those that are there, in that order.
fn read_jobs(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<JobRow>> {
    let mut st = conn.prepare_cached(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?1"
    ))?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.extend(st.query_row([id], job_row).optional()?);
    }
    Ok(rows)
}

/// The retry's writes, once it was found allowed: the new job PENDING with its outbox row, the
/// link, both history rows, and the children the old job's end revoked (and theirs) re-armed.
fn retry(tx: &Connection, r: &Retrying) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO job_retries (job_id, retry_id, at_ms, by) VALUES (?1, ?2, ?3, ?4)",
        params![r.id, r.new_id, r.at_ms, r.by],
    )?;
    // The job as it was published; no eta (it is due), no expiry, no reply address (whoever
    // waited for the first run's end had it).
    tx.execute(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
         submitted_ms, time_limit_ms, soft_time_limit_ms) \
         SELECT ?1, task, queue, args, server, recipe, kind, hosts, batch, 'PENDING', ?2, \
         time_limit_ms, soft_time_limit_ms FROM jobs WHERE id = ?3",
        params![r.new_id, r.at_ms, r.id],
    )?;
    tx.execute(
        "INSERT INTO job_outbox (job_id, due_ms) VALUES (?1, ?2)",
        params![r.new_id, r.at_ms],
    )?;
    let mut history = tx.prepare_cached(
        "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    history.execute(params![
        r.id,
        crate::store::RETRIED,
        r.by,
        r.at_ms,
        format!("retried as {} by {}", r.new_id, r.by)
    ])?;
    history.execute(params![
        r.new_id,
        crate::store::PENDING,
        r.by,
        r.at_ms,
        format!("retry of {}, asked by {}", r.id, r.by)
    ])?;
    // The children the old job's end revoked now wait for the new job.
    let mut level: Vec<String> = tx
        .prepare(
            "UPDATE job_edges SET parent = ?2, ended = 0 WHERE parent = ?1 AND ended = 1 \
             RETURNING child",
        )?
        .query_map(params![r.id, r.new_id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rearmed = Vec::new();
    let why = format!("re-armed: the retry of {} as {}", r.id, r.new_id);
    while !level.is_empty() {
        let mut next = Vec::new();
        for child in level {
            let changed = tx.execute(
                "UPDATE jobs SET state = 'WAITING', error = NULL, finished_ms = NULL \
                 WHERE id = ?1 AND state = 'REVOKED'",
                [&child],
            )?;
            if changed == 0 {
                continue;
            }
            history.execute(params![child, WAITING, r.by, r.at_ms, why])?;
            let below: Vec<String> = tx
                .prepare_cached(
                    "UPDATE job_edges SET ended = 0 WHERE parent = ?1 AND ended = 1 \
                     RETURNING child",
                )?
                .query_map([&child], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            next.extend(below);
            rearmed.push(child);
        }
        level = next;
    }
    // A re-armed job with another parent that failed meanwhile ends again, by that parent: the
    // release trigger runs for each of their parents.
    let mut touch = tx.prepare_cached(
        "UPDATE jobs SET state = state WHERE id IN (SELECT parent FROM job_edges WHERE child = ?1)",
    )?;
    for child in &rearmed {
        touch.execute([child])?;
    }
    Ok(())
}

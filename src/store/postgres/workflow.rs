//! Workflows: jobs published after others (WAITING, with their edges), the outbox of released
//! jobs, retries, and the edges a workflow's tree is read from. The release itself is the
//! `jobs_release` trigger (migration 0011), in the transaction of every final state, with the
//! row locks that make two hosts ending two parents of one child release it once.

use sqlx::{PgConnection, Row};

use super::{commit, Store};
use crate::store::batch::{self, FoldedHistory};
use crate::store::requests::{Claim, Retrying};
use crate::store::workflow::{id_taken, unknown_parents, AFTER};
use crate::store::{
    job_columns, Brief, Duplicate, Edge, JobRow, Linked, NewJob, StoreError, UniqueClaim, FAILURE,
    PENDING, RETRIED, REVOKED, WAITING,
};

/// How long publishing after parents tries again while workers' commits hold their rows.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

impl Store {
    pub(crate) async fn insert_waiting(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
        edges: &[(String, &'static str)],
        now_ms: i64,
    ) -> Result<Vec<Duplicate>, StoreError> {
        // The parents' rows are locked without waiting, and the whole transaction tried again
        // while a worker's commit holds one: a command that waited holding some parents' locks
        // while that commit waited for another (its rows come in its own order) would deadlock.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match self.insert_waiting_once(jobs, claims, edges, now_ms).await {
                Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_RETRY).await;
                }
                done => return done,
            }
        }
    }

    async fn insert_waiting_once(
        &self,
        jobs: &[NewJob],
        claims: &[UniqueClaim],
        edges: &[(String, &'static str)],
        now_ms: i64,
    ) -> Result<Vec<Duplicate>, StoreError> {
        let parents: Vec<&str> = edges.iter().map(|(p, _)| p.as_str()).collect();
        let all: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let run = async {
            let mut tx = self.pool.begin().await?;
            // The parents' rows locked until the commit: a worker ending one of them meanwhile
            // waits, then its release sees these edges; one ending it now makes this fail at
            // once (NOWAIT), and the caller tries again once its end is committed, read below.
            let found: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR SHARE NOWAIT",
            )
            .bind(&parents)
            .fetch_all(&mut *tx)
            .await?;
            if found.len() < parents.len() {
                let missing: Vec<String> = (parents.iter())
                    .filter(|p| !found.iter().any(|f| f == *p))
                    .map(|p| p.to_string())
                    .collect();
                return Ok(Err(unknown_parents(&missing)));
            }
            let taken: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
                .bind(&all)
                .fetch_all(&mut *tx)
                .await?;
            if !taken.is_empty() {
                return Ok(Err(id_taken(&taken)));
            }
            let duplicates = super::unique::take_keys(&mut tx, claims, now_ms).await?;
            let jobs: Vec<NewJob> = (jobs.iter())
                .filter(|j| !duplicates.iter().any(|d| d.job_id == j.id))
                .cloned()
                .collect();
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            commit::insert_waiting(&mut tx, &jobs).await?;
            let detail = format!("waits for {} parent(s)", edges.len());
            commit::insert_history(&mut tx, &waiting_history(&jobs, &detail)).await?;
            let (mut child, mut parent, mut mode) = (vec![], vec![], vec![]);
            for id in &ids {
                for (p, m) in edges {
                    child.push(*id);
                    parent.push(p.as_str());
                    mode.push(*m);
                }
            }
            sqlx::query(
                "INSERT INTO job_edges (child, parent, mode) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
            )
            .bind(&child)
            .bind(&parent)
            .bind(&mode)
            .execute(&mut *tx)
            .await?;
            // Parents that ended already count at once.
            sqlx::query("SELECT jobs_settle_waiting($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(duplicates))
        };
        run.await.map_err(self.fail())?
    }

    pub(crate) async fn insert_pairs(
        &self,
        firsts: &[NewJob],
        thens: &[NewJob],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = (firsts.iter().chain(thens))
            .map(|j| j.id.as_str())
            .collect();
        let run = async {
            let mut tx = self.pool.begin().await?;
            let taken: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
            if !taken.is_empty() {
                return Ok(Err(id_taken(&taken)));
            }
            // The firsts are due now: PENDING with their outbox rows, which the caller (or,
            // should it die, a worker) publishes.
            commit::insert_pending(&mut tx, firsts).await?;
            commit::insert_history(&mut tx, &batch::published(firsts)).await?;
            let (due_ids, due_ms): (Vec<&str>, Vec<i64>) = (firsts.iter())
                .map(|j| (j.id.as_str(), j.submitted_ms))
                .unzip();
            sqlx::query(
                "INSERT INTO job_outbox (job_id, due_ms) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[])",
            )
            .bind(&due_ids)
            .bind(&due_ms)
            .execute(&mut *tx)
            .await?;
            commit::insert_waiting(&mut tx, thens).await?;
            commit::insert_history(&mut tx, &waiting_history(thens, "waits for 1 parent(s)"))
                .await?;
            let child: Vec<&str> = thens.iter().map(|j| j.id.as_str()).collect();
            let mode = vec![AFTER; child.len()];
            sqlx::query(
                "INSERT INTO job_edges (child, parent, mode) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
            )
            .bind(&child)
            .bind(&due_ids)
            .bind(&mode)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        };
        run.await.map_err(self.fail())?
    }

    pub(crate) async fn claim_outbox(
        &self,
        c: &Claim,
        limit: i64,
        only: Option<Vec<String>>,
    ) -> Result<Vec<JobRow>, StoreError> {
        // One UPDATE: a racing claim waits for each row's lock, then re-checks the outer WHERE
        // against the committed row and finds it claimed (READ COMMITTED), so skips it.
        let q = sqlx::query(concat!(
            "WITH claimed AS (UPDATE job_outbox SET claimed_by = $1, claim_until = $2 \
             WHERE job_id IN (SELECT job_id FROM job_outbox \
             WHERE (claim_until IS NULL OR claim_until <= $3) \
             AND ($5::text[] IS NULL OR job_id = ANY($5)) ORDER BY due_ms LIMIT $4 \
             FOR UPDATE SKIP LOCKED) \
             AND (claim_until IS NULL OR claim_until <= $3) RETURNING job_id) \
             SELECT ",
            job_columns!(),
            " FROM jobs WHERE id IN (SELECT job_id FROM claimed)"
        ))
        .bind(&c.owner)
        .bind(c.until_ms)
        .bind(c.now_ms)
        .bind(limit)
        .bind(only);
        self.fetch_jobs(q).await
    }

    pub(crate) async fn outbox_waiting(&self, now_ms: i64) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM job_outbox \
             WHERE claim_until IS NULL OR claim_until <= $1)",
        )
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(self.fail())
    }

    pub(crate) async fn outbox_published(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM job_outbox WHERE job_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(self.fail())
    }

    pub(crate) async fn retry(&self, r: &Retrying) -> Result<(), StoreError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1 FOR UPDATE")
                    .bind(&r.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let retried_as: Option<String> =
                sqlx::query_scalar("SELECT retry_id FROM job_retries WHERE job_id = $1")
                    .bind(&r.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if retried_as.is_some() || !matches!(state.as_deref(), Some(FAILURE | REVOKED)) {
                return Ok(Err(r.refusal(state.as_deref(), retried_as.as_deref())));
            }
            let claims: Vec<UniqueClaim> = r.claim.iter().cloned().collect();
            if let Some(d) = super::unique::take_keys(&mut tx, &claims, r.at_ms)
                .await?
                .pop()
            {
                return Ok(Err(r.held(&d)));
            }
            retry(&mut tx, r).await?;
            tx.commit().await?;
            Ok(Ok(()))
        };
        run.await.map_err(self.fail())?
    }

    pub(crate) async fn edges_touching(&self, ids: &[String]) -> Result<Vec<Edge>, StoreError> {
        let rows = sqlx::query(
            "SELECT child, parent, mode FROM job_edges WHERE child = ANY($1) \
             UNION SELECT child, parent, mode FROM job_edges WHERE parent = ANY($1) \
             UNION SELECT id, parent_id, 'canvas' FROM jobs WHERE parent_id = ANY($1) \
             UNION SELECT id, parent_id, 'canvas' FROM jobs \
             WHERE id = ANY($1) AND parent_id IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        rows.iter()
            .map(|r| {
                Ok(Edge {
                    child: r.try_get(0)?,
                    parent: r.try_get(1)?,
                    mode: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.fail())
    }

    pub(crate) async fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        let rows = sqlx::query("SELECT id, task, state, error FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(self.fail())?;
        rows.iter()
            .map(|r| {
                Ok(Brief {
                    id: r.try_get(0)?,
                    task: r.try_get(1)?,
                    state: r.try_get(2)?,
                    error: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.fail())
    }

    pub(crate) async fn parents_summary(
        &self,
        child: &str,
        shown: i64,
    ) -> Result<(Vec<(String, i64)>, Vec<Linked>), StoreError> {
        let by_state: Vec<(String, i64)> = sqlx::query_as(
            "SELECT j.state, count(*) FROM job_edges e JOIN jobs j ON j.id = e.parent \
             WHERE e.child = $1 GROUP BY j.state ORDER BY j.state",
        )
        .bind(child)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        let rows = sqlx::query(
            "SELECT e.mode, j.id, j.task, j.state, j.error \
             FROM job_edges e JOIN jobs j ON j.id = e.parent WHERE e.child = $1 \
             ORDER BY j.state IN ('SUCCESS', 'FAILURE', 'REVOKED'), j.id LIMIT $2",
        )
        .bind(child)
        .bind(shown)
        .fetch_all(&self.pool)
        .await
        .map_err(self.fail())?;
        let first = rows
            .iter()
            .map(|r| {
                Ok(Linked {
                    mode: r.try_get(0)?,
                    job: Brief {
                        id: r.try_get(1)?,
                        task: r.try_get(2)?,
                        state: r.try_get(3)?,
                        error: r.try_get(4)?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.fail())?;
        Ok((by_state, first))
    }

    pub(crate) async fn retries_of(
        &self,
        id: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        sqlx::query_as(
            "SELECT (SELECT job_id FROM job_retries WHERE retry_id = $1), \
             (SELECT retry_id FROM job_retries WHERE job_id = $1)",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(self.fail())
    }
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

/// The retry's writes, once it was found allowed: the new job PENDING with its outbox row, the
/// link, both history rows, and the children the old job's end revoked (and theirs) re-armed.
async fn retry(tx: &mut PgConnection, r: &Retrying) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO job_retries (job_id, retry_id, at_ms, by) VALUES ($1, $2, $3, $4)")
        .bind(&r.id)
        .bind(&r.new_id)
        .bind(r.at_ms)
        .bind(&r.by)
        .execute(&mut *tx)
        .await?;
    // The job as it was published; no eta (it is due), no expiry, no reply address (whoever
    // waited for the first run's end had it).
    sqlx::query(
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
         submitted_ms, time_limit_ms, soft_time_limit_ms) \
         SELECT $1, task, queue, args, server, recipe, kind, hosts, batch, 'PENDING', $2, \
         time_limit_ms, soft_time_limit_ms FROM jobs WHERE id = $3",
    )
    .bind(&r.new_id)
    .bind(r.at_ms)
    .bind(&r.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO job_outbox (job_id, due_ms) VALUES ($1, $2)")
        .bind(&r.new_id)
        .bind(r.at_ms)
        .execute(&mut *tx)
        .await?;
    let history = |id: &str, state: &str, detail: String| {
        sqlx::query(
            "INSERT INTO job_events (job_id, state, worker, at_ms, detail) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(state.to_string())
        .bind(r.by.clone())
        .bind(r.at_ms)
        .bind(detail)
    };
    history(
        &r.id,
        RETRIED,
        format!("retried as {} by {}", r.new_id, r.by),
    )
    .execute(&mut *tx)
    .await?;
    history(
        &r.new_id,
        PENDING,
        format!("retry of {}, asked by {}", r.id, r.by),
    )
    .execute(&mut *tx)
    .await?;
    // The children the old job's end revoked now wait for the new job.
    let mut level: Vec<String> = sqlx::query_scalar(
        "UPDATE job_edges SET parent = $2, ended = FALSE WHERE parent = $1 AND ended \
         RETURNING child",
    )
    .bind(&r.id)
    .bind(&r.new_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut rearmed = Vec::new();
    let why = format!("re-armed: the retry of {} as {}", r.id, r.new_id);
    while !level.is_empty() {
        let waiting: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'WAITING', error = NULL, finished_ms = NULL \
             WHERE id = ANY($1) AND state = 'REVOKED' RETURNING id",
        )
        .bind(&level)
        .fetch_all(&mut *tx)
        .await?;
        for id in &waiting {
            history(id, WAITING, why.clone()).execute(&mut *tx).await?;
        }
        level = sqlx::query_scalar(
            "UPDATE job_edges SET ended = FALSE WHERE parent = ANY($1) AND ended RETURNING child",
        )
        .bind(&waiting)
        .fetch_all(&mut *tx)
        .await?;
        rearmed.extend(waiting);
    }
    // A re-armed job with another parent that failed meanwhile ends again, by that parent.
    if !rearmed.is_empty() {
        sqlx::query("SELECT jobs_settle_waiting($1)")
            .bind(&rearmed)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

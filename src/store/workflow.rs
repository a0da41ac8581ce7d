//! Workflows in the store: a job published after others waits ([`WAITING`](super::WAITING))
//! with one edge per parent, and is released by the transaction of its last parent's end (a
//! trigger in each backend's migrations, so that every way of ending a job releases). What the
//! callers hand and read back is here: the parents of new jobs, a job's links, a workflow's
//! tree, the checks made before anything is stored, and the [`Store`] calls that take them
//! (publishing after parents, the outbox, retries, links and trees).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::requests::{Claim, Retrying};
use super::{now_ms, Backend, JobFilter, JobRow, NewJob, Store, StoreError, WAITING};

/// An edge's mode: the parent must end SUCCESS; its FAILURE or REVOKED ends the child REVOKED.
pub const AFTER: &str = "after";
/// An edge's mode: the parent must end, whatever its end.
pub const AFTER_ANY: &str = "after_any";

/// The parents of jobs being published, by mode.
#[derive(Debug, Clone, Default)]
pub struct Parents {
    pub after: Vec<String>,
    pub after_any: Vec<String>,
}

impl Parents {
    pub fn is_empty(&self) -> bool {
        self.after.is_empty() && self.after_any.is_empty()
    }

    /// Distinct (parent, mode), in order of first mention; a parent named in both modes takes
    /// `after`, the stricter.
    pub fn edges(&self) -> Vec<(String, &'static str)> {
        let strict: BTreeSet<&str> = self.after.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        let after = self.after.iter().map(|p| (p, AFTER));
        let any = (self.after_any.iter())
            .filter(|p| !strict.contains(p.as_str()))
            .map(|p| (p, AFTER_ANY));
        after
            .chain(any)
            .filter(|(p, _)| seen.insert(p.as_str()))
            .map(|(p, mode)| (p.clone(), mode))
            .collect()
    }

    /// What is refused before the store is asked: more than `max` parents, or a job among its
    /// own parents (the one cycle new jobs can make: every parent must exist already, and a new
    /// job's id may not).
    pub(super) fn check(&self, new_ids: &[&str], max: usize) -> Result<(), StoreError> {
        let edges = self.edges();
        if edges.len() > max {
            return Err(StoreError::Refused(format!(
                "{} parents, over [workflows] max_parents ({max}): nothing was published; \
                 split the work, or raise max_parents",
                edges.len()
            )));
        }
        let ids: BTreeSet<&str> = new_ids.iter().copied().collect();
        if let Some((p, _)) = edges.iter().find(|(p, _)| ids.contains(p.as_str())) {
            return Err(StoreError::Refused(format!(
                "job {p} would wait for itself (a cycle): nothing was published; \
                 name other parents"
            )));
        }
        Ok(())
    }
}

/// The refusal for parents the store does not have.
pub(super) fn unknown_parents(missing: &[String]) -> StoreError {
    StoreError::Refused(format!(
        "unknown parent job{} {}: nothing was published; `cm jobs` lists the ids the store has",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    ))
}

/// The refusal for a new job whose id the store has already.
pub(super) fn id_taken(ids: &[String]) -> StoreError {
    StoreError::Refused(format!(
        "job id {} is in the store already: nothing was published; publish with a new id",
        ids.join(", ")
    ))
}

/// One edge as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub child: String,
    pub parent: String,
    pub mode: String,
}

/// A job as a workflow shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Brief {
    pub id: String,
    pub task: String,
    pub state: String,
    pub error: Option<String>,
}

/// A parent or child of a job, with the mode of the edge between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Linked {
    pub mode: String,
    #[serde(flatten)]
    pub job: Brief,
}

/// A job's neighbours: its parents and children with their states, and its retries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Links {
    pub parents: Vec<Linked>,
    pub children: Vec<Linked>,
    /// The job this one is a retry of.
    pub retry_of: Option<String>,
    /// The job that retried this one.
    pub retried_as: Option<String>,
}

/// A whole workflow: every job linked to the asked one through edges, parents first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tree {
    /// Jobs with no parent in the workflow.
    pub roots: Vec<String>,
    pub jobs: BTreeMap<String, Brief>,
    pub edges: Vec<Edge>,
}

impl Tree {
    /// The children of `id`, in id order, with their edges' modes.
    pub fn children_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.edges
            .iter()
            .filter(move |e| e.parent == id)
            .map(|e| (e.child.as_str(), e.mode.as_str()))
    }
}

/// A job waiting for others, as db_stats shows it: its parents by state, and the first few,
/// those not ended yet first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    #[serde(flatten)]
    pub job: Brief,
    pub hosts: Option<String>,
    /// How many parents it has.
    pub parents: i64,
    /// Its parents per state.
    pub by_state: Vec<(String, i64)>,
    /// At most [`WAITING_SHOWN`] of its parents, those not final first, then by id.
    pub first: Vec<Linked>,
}

/// The parents [`Waiting::first`] names.
pub const WAITING_SHOWN: i64 = 5;

/// The most jobs [`Tree`] collects: a workflow bigger than this is shown in part.
pub const TREE_LIMIT: usize = 100_000;

impl Store {
    /// Records jobs published after `parents` as WAITING, with one edge per job and parent,
    /// in one transaction; those whose parents have all ended as required already are released
    /// in it too (PENDING, with an outbox row: [`Store::claim_outbox`] hands them to whoever
    /// publishes them). Refused, with nothing stored: more than `max_parents` parents, a job
    /// among its own parents, an unknown parent, an id the store has already.
    pub async fn insert_waiting(
        &self,
        jobs: &[NewJob],
        parents: &Parents,
        max_parents: usize,
    ) -> Result<(), StoreError> {
        self.insert_waiting_unique(jobs, &[], parents, max_parents)
            .await
            .map(|_| ())
    }

    /// [`Store::insert_waiting`], those of `jobs` with a unique key (`claims`) only if they can
    /// take it, in the same transaction, as [`Store::insert_pending_unique`] does: a job whose
    /// key is held is not stored, and comes back as a [`Duplicate`] naming the holder.
    pub async fn insert_waiting_unique(
        &self,
        jobs: &[NewJob],
        claims: &[super::UniqueClaim],
        parents: &Parents,
        max_parents: usize,
    ) -> Result<Vec<super::Duplicate>, StoreError> {
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        parents.check(&ids, max_parents)?;
        let edges = parents.edges();
        let now = super::now_ms();
        on_backend!(self, b => b.insert_waiting(jobs, claims, &edges, now).await)
    }

    /// Records jobs published in pairs, in one transaction: each first job due now (PENDING,
    /// with an outbox row: [`Store::claim_outbox`] hands it to whoever publishes it), each
    /// second job WAITING `--after` its own first, released by that first's end (the web's
    /// "provision these hosts first": each host's launch after its own provision). Refused,
    /// with nothing stored: an id the store has already.
    pub async fn insert_pairs(&self, pairs: &[(NewJob, NewJob)]) -> Result<(), StoreError> {
        let (firsts, thens): (Vec<NewJob>, Vec<NewJob>) = pairs.iter().cloned().unzip();
        let ids: Vec<&str> = firsts.iter().map(|j| j.id.as_str()).collect();
        if let Some(then) = thens.iter().find(|t| ids.contains(&t.id.as_str())) {
            return Err(StoreError::Refused(format!(
                "job {} would wait for itself (a cycle): nothing was published",
                then.id
            )));
        }
        on_backend!(self, b => b.insert_pairs(&firsts, &thens).await)
    }

    /// Claims up to `limit` outbox rows (jobs released and not yet published) for `owner` until
    /// `until_ms`, in one statement: of publishers racing for a row, exactly one gets it; a
    /// claim lapsed by `now_ms` (its claimer died) is taken again. `only`: just these jobs (a
    /// command publishing what it released itself). The claimer publishes each job, then calls
    /// [`Store::outbox_published`].
    pub async fn claim_outbox(
        &self,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
        only: Option<&[String]>,
    ) -> Result<Vec<JobRow>, StoreError> {
        let claim = Claim {
            owner: owner.to_string(),
            now_ms,
            until_ms,
        };
        let only = only.map(<[String]>::to_vec);
        on_backend!(self, b => b.claim_outbox(&claim, limit.max(1), only).await)
    }

    /// Whether any outbox row is there to claim at `now_ms` (a read: no write lock taken).
    pub async fn outbox_waiting(&self, now_ms: i64) -> Result<bool, StoreError> {
        on_backend!(self, b => b.outbox_waiting(now_ms).await)
    }

    /// Deletes job `id`'s outbox row once it was published.
    pub async fn outbox_published(&self, id: &str) -> Result<(), StoreError> {
        on_backend!(self, b => b.outbox_published(id).await)
    }

    /// Runs final job `id` (FAILURE or REVOKED) again as a new job, returned: stored PENDING
    /// with an outbox row, linked to `id` (one retry per job), recorded in both histories; the
    /// children `id`'s end revoked (and theirs) wait again, for the new job. `by` names who
    /// asked. `unique`: the new job's unique key and how long it holds it (its task's
    /// `unique`), taken in the same transaction. Refused: no such job, not final, SUCCESS,
    /// retried already, or its unique key held by another job.
    pub async fn retry(
        &self,
        id: &str,
        by: &str,
        unique: Option<(String, &'static str)>,
    ) -> Result<String, StoreError> {
        let new_id = uuid::Uuid::new_v4().to_string();
        let retry = Retrying {
            id: id.to_string(),
            claim: unique.map(|(key, hold)| super::UniqueClaim {
                job_id: new_id.clone(),
                key,
                hold,
            }),
            new_id,
            by: by.to_string(),
            at_ms: now_ms(),
        };
        on_backend!(self, b => b.retry(&retry).await)?;
        Ok(retry.new_id)
    }

    /// Job `id`'s parents and children with their states, and its retries.
    pub async fn links(&self, id: &str) -> Result<Links, StoreError> {
        let ids = [id.to_string()];
        let edges = on_backend!(self, b => b.edges_touching(&ids).await)?;
        let others: Vec<String> = (edges.iter())
            .map(|e| if e.child == id { &e.parent } else { &e.child })
            .cloned()
            .collect();
        let briefs = self.briefs(&others).await?;
        let mut links = Links::default();
        for e in edges {
            let (other, list) = if e.child == id {
                (&e.parent, &mut links.parents)
            } else {
                (&e.child, &mut links.children)
            };
            if let Some(b) = briefs.get(other) {
                list.push(Linked {
                    mode: e.mode.clone(),
                    job: b.clone(),
                });
            }
        }
        (links.retry_of, links.retried_as) = on_backend!(self, b => b.retries_of(id).await)?;
        Ok(links)
    }

    /// The jobs `filter` lists (its state set to WAITING), each with what it waits for: its
    /// parents counted by state, and the first [`WAITING_SHOWN`] of them.
    pub async fn waiting(&self, filter: &JobFilter) -> Result<Vec<Waiting>, StoreError> {
        let filter = JobFilter {
            state: Some(WAITING.to_string()),
            ..filter.clone()
        };
        let mut out = Vec::new();
        for row in self.list(&filter).await? {
            let id = row.job.id.clone();
            let (by_state, first) =
                on_backend!(self, b => b.parents_summary(&id, WAITING_SHOWN).await)?;
            out.push(Waiting {
                job: Brief {
                    id,
                    task: row.job.task,
                    state: row.state,
                    error: row.error,
                },
                hosts: row.job.hosts,
                parents: by_state.iter().map(|(_, n)| n).sum(),
                by_state,
                first,
            });
        }
        Ok(out)
    }

    /// The whole workflow job `id` is part of: every job linked to it through edges (and, for
    /// Celery's canvas, through `parent_id`: mode `canvas`), up to its roots and down to their
    /// last children (at most [`TREE_LIMIT`] jobs).
    pub async fn tree(&self, id: &str) -> Result<Tree, StoreError> {
        let mut known: std::collections::BTreeSet<String> = [id.to_string()].into();
        let mut edges: std::collections::BTreeSet<(String, String, String)> = Default::default();
        let mut frontier = vec![id.to_string()];
        while !frontier.is_empty() && known.len() < TREE_LIMIT {
            let found = on_backend!(self, b => b.edges_touching(&frontier).await)?;
            frontier.clear();
            for e in found {
                for end in [&e.child, &e.parent] {
                    if known.insert(end.clone()) {
                        frontier.push(end.clone());
                    }
                }
                edges.insert((e.parent, e.child, e.mode));
            }
        }
        let ids: Vec<String> = known.into_iter().collect();
        let jobs = self.briefs(&ids).await?;
        let children: std::collections::BTreeSet<&str> =
            edges.iter().map(|(_, c, _)| c.as_str()).collect();
        let roots = (jobs.keys())
            .filter(|j| !children.contains(j.as_str()))
            .cloned()
            .collect();
        let edges = (edges.iter())
            .map(|(parent, child, mode)| Edge {
                child: child.clone(),
                parent: parent.clone(),
                mode: mode.clone(),
            })
            .collect();
        Ok(Tree { roots, jobs, edges })
    }

    pub(super) async fn briefs(
        &self,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, Brief>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in ids.chunks(1000) {
            let found = on_backend!(self, b => b.briefs(chunk).await)?;
            out.extend(found.into_iter().map(|b| (b.id.clone(), b)));
        }
        Ok(out)
    }
}

//! Workflows in the store: a job published after others waits ([`WAITING`](super::WAITING))
//! with one edge per parent, and is released by the transaction of its last parent's end (a
//! trigger in each backend's migrations, so that every way of ending a job releases). What the
//! callers hand and read back is here: the parents of new jobs, a job's links, a workflow's
//! tree, and the checks made before anything is stored.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::StoreError;

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

/// The most jobs [`Tree`] collects: a workflow bigger than this is shown in part.
pub const TREE_LIMIT: usize = 100_000;

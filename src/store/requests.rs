//! What [`Store`](super::Store) hands a backend for a call that says more than an id or two:
//! one value per call, made once above the backends, with what both derive from it (a revoke's
//! error text and history rows). Owned, so that SQLite's blocking threads can take them.

use std::borrow::Cow;

use super::batch::FoldedHistory;
use super::{MessageOptions, NewJob, REVOKED};

/// A worker taking leases: `owner` (its node name) at `now_ms`, until `until_ms`. A claim
/// takes the leases lapsed, or the jobs come due, by `now_ms`; a renewal keeps the owner's
/// own leases, lapsed or not, as long as no other worker took them.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub owner: String,
    pub now_ms: i64,
    pub until_ms: i64,
}

/// The first `limit` jobs of `queue`, in the order of the time that made them due (their eta,
/// or their lease's end).
#[derive(Debug, Clone)]
pub(super) struct First {
    pub queue: String,
    pub limit: i64,
}

/// One history row that a call writes with the change it records: `worker`'s, on job
/// `job_id`, at `at_ms`.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub job_id: String,
    pub worker: String,
    pub at_ms: i64,
    pub detail: String,
}

/// A job received before its eta, to hold as SCHEDULED: `entry` is its SCHEDULED history row,
/// its worker the job's.
#[derive(Debug, Clone)]
pub(super) struct Scheduling {
    pub job: NewJob,
    pub options: MessageOptions,
    pub entry: Entry,
}

/// Distinct `ids` revoked by `by` at `at_ms`.
#[derive(Debug, Clone)]
pub(super) struct Revoking {
    pub ids: Vec<String>,
    pub terminate: bool,
    pub signal: Option<String>,
    pub by: String,
    pub at_ms: i64,
    /// The error of a job this revoke ends.
    pub why: String,
}

impl Revoking {
    pub fn new(
        ids: Vec<String>,
        terminate: bool,
        signal: Option<&str>,
        by: &str,
        at_ms: i64,
    ) -> Self {
        Self {
            ids,
            terminate,
            signal: signal.map(str::to_string),
            by: by.to_string(),
            at_ms,
            why: format!("revoked by {by}"),
        }
    }

    /// The REVOKED history rows of the jobs it `ended`.
    pub fn history<'a>(&'a self, ended: &'a [impl AsRef<str>]) -> Vec<FoldedHistory<'a>> {
        ended
            .iter()
            .map(|id| FoldedHistory {
                job_id: id.as_ref(),
                state: REVOKED,
                worker: &self.by,
                at_ms: self.at_ms,
                detail: Some(Cow::Borrowed(&self.why)),
                later: None,
            })
            .collect()
    }
}

/// A retry of final job `id` as `new_id`, asked by `by` at `at_ms`.
#[derive(Debug, Clone)]
pub(super) struct Retrying {
    pub id: String,
    pub new_id: String,
    pub by: String,
    pub at_ms: i64,
    /// The new job's unique key, when its task has one: taken in the retry's transaction.
    pub claim: Option<super::UniqueClaim>,
}

impl Retrying {
    /// The error of a retry whose unique key another job holds.
    pub fn held(&self, d: &super::Duplicate) -> super::StoreError {
        super::StoreError::Refused(format!(
            "job {} was not retried: its unique key {:?} is held by job {} (already queued); \
             retry it once that one has started or ended",
            self.id, d.key, d.holder
        ))
    }

    /// The error of a refused retry of a job in `state` (`None`: no such job).
    pub fn refusal(&self, state: Option<&str>, retried_as: Option<&str>) -> super::StoreError {
        let id = &self.id;
        super::StoreError::Refused(match (state, retried_as) {
            (_, Some(new)) => format!(
                "job {id} was retried already, as {new}: retry that one if it failed"
            ),
            (None, _) => format!("no job {id} in the store: `cm jobs` lists the ids it has"),
            (Some(super::SUCCESS), _) => {
                format!("job {id} ended SUCCESS: only a failed or revoked job is retried")
            }
            (Some(state), _) => format!(
                "job {id} is {state}, not final: only a job that ended FAILURE or REVOKED is retried"
            ),
        })
    }
}

//! Revoking jobs the one way every front end does it (`cm jobs revoke`, `POST /api/jobs/ID/revoke`,
//! the db_stats button): the revoke is kept in the store for every worker, and each job's answer
//! says what it comes to, from the job's state before and after.

use serde::Serialize;

use crate::jobs::cancel::signal_named;
use crate::store::{self, Store, StoreError};

/// What revoking one job came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// It was waiting in its queue: REVOKED now, and no worker will run it.
    Revoked,
    /// A worker runs it and is asked to end it with the signal.
    Terminating,
    /// A worker runs it and lets it finish (a revoke without terminate stops only what has not
    /// started, as in Celery); it will not run again.
    Running,
    /// Already final: unchanged.
    Final,
    /// No such job yet: the revoke is kept, and the job is REVOKED when a worker receives it.
    Unknown,
}

/// One job's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub id: String,
    pub fate: Fate,
    /// Its state after the revoke (`None`: no such job yet).
    pub state: Option<String>,
    /// Its state before (`None`: no such job).
    pub was: Option<String>,
    /// The worker that holds it, if one does.
    pub worker: Option<String>,
    /// The signal a terminate sends (`SIGTERM` by default), if asked.
    pub signal: Option<String>,
}

impl Report {
    /// One line for a person.
    pub fn describe(&self) -> String {
        let on = self.worker.as_deref().unwrap_or("a worker");
        let was = self.was.as_deref().unwrap_or("-");
        match self.fate {
            Fate::Revoked => format!("{}: REVOKED now (was {was}, not yet running)", self.id),
            Fate::Terminating => format!(
                "{}: running on {on} ({was}): asked to stop, it will be terminated with {}",
                self.id,
                self.signal.as_deref().unwrap_or("SIGTERM")
            ),
            Fate::Running => format!(
                "{}: running on {on} ({was}): left to finish, never run again (--terminate stops it)",
                self.id
            ),
            Fate::Final => format!(
                "{}: already {}; unchanged",
                self.id,
                self.state.as_deref().unwrap_or(was)
            ),
            Fate::Unknown => format!(
                "{}: no such job yet; kept, it is REVOKED when it arrives",
                self.id
            ),
        }
    }
}

/// The canonical name (`SIGTERM`) of a signal asked for by name (`TERM`, `sigterm`), or why not.
pub fn signal_name(asked: &str) -> Result<&'static str, String> {
    signal_named(asked).map(|s| s.as_str())
}

/// Revokes `ids` (`signal`: a canonical name, used with `terminate`); `by` names who asks.
pub async fn revoke(
    store: &Store,
    ids: &[String],
    terminate: bool,
    signal: Option<&str>,
    by: &str,
) -> Result<Vec<Report>, StoreError> {
    let signal = terminate.then(|| signal.unwrap_or("SIGTERM"));
    let mut before = Vec::with_capacity(ids.len());
    for id in ids {
        before.push((id.as_str(), store.get(id).await?));
    }
    let answers = store.revoke(ids, terminate, signal, by).await?;
    Ok(answers
        .into_iter()
        .map(|a| {
            let row = before
                .iter()
                .find(|(id, _)| *id == a.id)
                .and_then(|(_, row)| row.as_ref());
            let was = row.map(|r| r.state.clone());
            let fate = match (&was, &a.state) {
                (_, None) => Fate::Unknown,
                (Some(w), _) if store::is_final(w) => Fate::Final,
                (_, Some(now)) if now == store::REVOKED => Fate::Revoked,
                (_, Some(now)) if store::is_final(now) => Fate::Final,
                _ if terminate => Fate::Terminating,
                _ => Fate::Running,
            };
            Report {
                worker: row
                    .filter(|_| matches!(fate, Fate::Terminating | Fate::Running))
                    .and_then(|r| r.worker.clone()),
                signal: signal
                    .filter(|_| fate == Fate::Terminating)
                    .map(str::to_string),
                id: a.id,
                fate,
                state: a.state,
                was,
            }
        })
        .collect())
}

//! What the pages and `/api/` both read: the jobs query (filters, pagination), one snapshot of
//! the store for it, one job by the name it was asked by, the workers' statuses, the HTTP
//! status of a failed publish, and revoking.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::state::AppState;
use crate::client::lookup::{self, Found};
use crate::control::WorkerStatus;
use crate::exit::{code_for, Code};
use crate::store::{EventRow, JobFilter, JobRow, StoreError, Waiting, WAITING};

/// Rows per page of `/cm/launch/db_stats` and `/api/jobs`.
pub const PER_PAGE: i64 = 50;

/// The query string of db_stats and `/api/jobs`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct JobsQuery {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub recipe: Option<String>,
    /// Jobs of this batch are highlighted (it does not filter).
    #[serde(default)]
    pub batch: Option<String>,
    #[serde(default)]
    pub page: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref().filter(|s| !s.is_empty()).cloned()
}

impl JobsQuery {
    pub fn page(&self) -> i64 {
        self.page
            .as_deref()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1)
    }

    pub fn state(&self) -> String {
        nonempty(&self.state).unwrap_or_default()
    }

    pub fn server(&self) -> String {
        nonempty(&self.server).unwrap_or_default()
    }

    pub fn recipe(&self) -> String {
        nonempty(&self.recipe).unwrap_or_default()
    }

    pub fn batch(&self) -> String {
        nonempty(&self.batch).unwrap_or_default()
    }

    /// The rows to list: every filter, one page.
    pub fn filter(&self, per_page: i64) -> JobFilter {
        JobFilter {
            state: nonempty(&self.state),
            server: nonempty(&self.server),
            recipe: nonempty(&self.recipe),
            batch: None,
            queue: None,
            limit: per_page,
            offset: (self.page().saturating_sub(1)).saturating_mul(per_page),
        }
    }

    /// What the state counts cover: the server and recipe filters, every state.
    pub fn count_filter(&self) -> JobFilter {
        JobFilter {
            server: nonempty(&self.server),
            recipe: nonempty(&self.recipe),
            ..JobFilter::default()
        }
    }

    /// This query as a URL query string with `page` (and optionally `state`) replaced.
    pub fn link(&self, page: i64, state: Option<&str>) -> String {
        let mut q = self.clone();
        q.page = (page > 1).then(|| page.to_string());
        if let Some(s) = state {
            q.state = Some(s.to_string()).filter(|s| !s.is_empty());
        }
        let pairs: Vec<(&str, String)> = [
            ("state", nonempty(&q.state)),
            ("server", nonempty(&q.server)),
            ("recipe", nonempty(&q.recipe)),
            ("batch", nonempty(&q.batch)),
            ("page", q.page),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        if pairs.is_empty() {
            "?".into()
        } else {
            let encoded = serde_urlencoded::to_string(&pairs).unwrap_or_default();
            format!("?{encoded}")
        }
    }
}

/// Everything db_stats and `/api/jobs` show for one query.
pub struct Snapshot {
    pub jobs: Vec<JobRow>,
    pub total: i64,
    pub counts: Vec<(String, i64)>,
    pub per_minute: Vec<i64>,
    pub by_worker: Vec<(String, i64)>,
    pub batch_counts: Vec<(String, i64)>,
    /// The newest [`WAITING_LISTED`] WAITING jobs of the server and recipe filters, each with
    /// what it waits for (none read when the counts show no job waiting).
    pub waiting: Vec<Waiting>,
}

/// WAITING jobs db_stats and `/api/jobs` list with their parents.
pub const WAITING_LISTED: i64 = 10;

impl Snapshot {
    /// WAITING jobs of the server and recipe filters.
    pub fn waiting_total(&self) -> i64 {
        (self.counts.iter())
            .find(|(s, _)| s == WAITING)
            .map_or(0, |(_, n)| *n)
    }
}

/// One read of the store for `q`: its page of jobs and every count the page and the API show.
pub async fn snapshot(state: &AppState, q: &JobsQuery) -> Result<Snapshot, StoreError> {
    let store = state.store();
    let filter = q.filter(PER_PAGE);
    let mut jobs = store.list(&filter).await?;
    store.explain_waits(&mut jobs).await?;
    let total = store
        .count(&JobFilter {
            limit: 0,
            offset: 0,
            ..filter
        })
        .await?;
    let counts = store.counts_by_state(&q.count_filter()).await?;
    let per_minute = store.finished_per_minute(30).await?;
    let by_worker = store.counts_by_worker().await?;
    let batch = q.batch();
    let batch_counts = if batch.is_empty() {
        Vec::new()
    } else {
        store
            .counts_by_state(&JobFilter {
                batch: Some(batch),
                ..JobFilter::default()
            })
            .await?
    };
    let waiting = if counts.iter().any(|(s, n)| s == WAITING && *n > 0) {
        let listed = JobFilter {
            limit: WAITING_LISTED,
            ..q.count_filter()
        };
        store.waiting(&listed).await?
    } else {
        Vec::new()
    };
    Ok(Snapshot {
        jobs,
        total,
        counts,
        per_minute,
        by_worker,
        batch_counts,
        waiting,
    })
}

/// One job as `/cm/jobs/ID` and `/api/jobs/ID` show it, or why there is none.
pub enum Named {
    Job(Box<JobRow>, Vec<EventRow>),
    /// 404 for no such job, 409 for a part that several ids begin or end with; the line says.
    Refused(StatusCode, String),
}

/// The job `given` names (its id, or a unique start or end of one: the web shows ids' last 8
/// characters), with its history.
pub async fn named_job(state: &AppState, given: &str) -> Result<Named, StoreError> {
    let store = state.store();
    let found = lookup::find(store, given).await?;
    let job = match found {
        Found::Job(job) => job,
        Found::Nothing => {
            let why = found.refusal(given).unwrap_or_default();
            return Ok(Named::Refused(StatusCode::NOT_FOUND, why));
        }
        Found::Several { .. } => {
            let why = found.refusal(given).unwrap_or_default();
            return Ok(Named::Refused(StatusCode::CONFLICT, why));
        }
    };
    let history = store.history(&job.job.id).await?;
    Ok(Named::Job(job, history))
}

/// Pages of `PER_PAGE` rows for `total` rows; no rows is still one (empty) page.
pub fn pages_for(total: i64) -> i64 {
    ((total + PER_PAGE - 1) / PER_PAGE).max(1)
}

/// This host's workers as `cm queue status` sees them, read off the async threads (pid files,
/// /proc); a read that panicked shows none.
pub async fn worker_statuses(state: &AppState) -> Vec<WorkerStatus> {
    let cfg = state.cfg().clone();
    tokio::task::spawn_blocking(move || {
        let workers: Vec<_> = cfg.workers().collect();
        crate::control::status(&cfg, &workers)
    })
    .await
    .unwrap_or_default()
}

/// What a failed publish answers: 503 when the broker or store is away, 400 for a bad value.
pub fn publish_error_status(e: &anyhow::Error) -> StatusCode {
    match code_for(e) {
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::BadArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Revokes job `id` from the web (the API and the db_stats button), as `web@<host>`.
pub async fn revoke(
    state: &AppState,
    id: &str,
    terminate: bool,
    signal: Option<&str>,
) -> anyhow::Result<crate::client::revoke::Report> {
    let by = format!("web@{}", state.cfg().node_host);
    let ids = [id.to_string()];
    let mut reports =
        crate::client::revoke::revoke(state.store(), &ids, terminate, signal, &by).await?;
    tracing::info!("revoke of job {id} from the web (terminate: {terminate})");
    // One id asked, one answer.
    reports
        .pop()
        .ok_or_else(|| anyhow::anyhow!("status store: no answer for the revoke of job {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_filters_and_encode() {
        let q = JobsQuery {
            recipe: Some("Slurm Cluster".into()),
            page: Some("3".into()),
            ..JobsQuery::default()
        };
        assert_eq!(q.link(4, None), "?recipe=Slurm+Cluster&page=4");
        assert_eq!(
            q.link(1, Some("SUCCESS")),
            "?state=SUCCESS&recipe=Slurm+Cluster"
        );
        assert_eq!(q.filter(50).offset, 100);
        assert_eq!(JobsQuery::default().link(1, None), "?");
    }

    #[test]
    fn an_empty_list_is_one_page() {
        assert_eq!(pages_for(0), 1);
        assert_eq!(pages_for(PER_PAGE), 1);
        assert_eq!(pages_for(PER_PAGE + 1), 2);
    }
}

//! The JSON twins under `/api/`, and `/healthz`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::data::{
    named_job, pages_for, publish_error_status, snapshot, worker_statuses, JobsQuery, Named,
    PER_PAGE,
};
use super::input::{self, Invalid, LaunchInput, LaunchPlan, ProvisionInput};
use super::render::json_error;
use super::state::AppState;
use crate::celery::message::TaskMessage;
use crate::client::publish;
use crate::client::revoke;
use crate::jobs;

/// A health check answers well within a load balancer's patience, broker down or not.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

fn counts_object(counts: &[(String, i64)]) -> Value {
    Value::Object(
        counts
            .iter()
            .map(|(s, n)| (s.clone(), Value::from(*n)))
            .collect(),
    )
}

/// `GET /api/jobs?state=&server=&recipe=&batch=&page=`: one page of jobs, newest first,
/// with the total, the counts per state and what db_stats draws.
pub async fn jobs(State(state): State<AppState>, Query(q): Query<JobsQuery>) -> Response {
    let snap = match snapshot(&state, &q).await {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    };
    let batch = q.batch();
    Json(json!({
        "jobs": snap.jobs,
        "total": snap.total,
        "counts": counts_object(&snap.counts),
        "page": q.page(),
        "pages": pages_for(snap.total),
        "per_page": PER_PAGE,
        "finished_per_minute": snap.per_minute,
        "by_worker": counts_object(&snap.by_worker),
        "waiting": snap.waiting,
        "waiting_total": snap.waiting_total(),
        "batch": (!batch.is_empty()).then(|| json!({
            "id": batch,
            "counts": counts_object(&snap.batch_counts),
            "total": snap.batch_counts.iter().map(|(_, n)| n).sum::<i64>(),
        })),
    }))
    .into_response()
}

/// `GET /api/jobs/{id}`: the job, its history of states, and its links (parents and children
/// with their states, retries); the twin of `/cm/jobs/{id}`, and like it, `id` may be a unique
/// start or end of one (404 none, 409 several).
pub async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match named_job(&state, &id).await {
        Ok(Named::Job(job, history)) => match state.store().links(&job.job.id).await {
            Ok(links) => {
                Json(json!({ "job": job, "history": history, "links": links })).into_response()
            }
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
        },
        Ok(Named::Refused(status, why)) => json_error(status, why, None),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    }
}

/// A body that must be `{}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `POST /api/jobs/{id}/revoke`'s body, all optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeInput {
    terminate: Option<bool>,
    /// TERM, KILL, INT, HUP, QUIT, USR1, USR2 (with or without SIG); implies terminate.
    signal: Option<String>,
}

/// `POST /api/jobs/{id}/revoke` with `{terminate, signal}` or no body (still JSON-typed):
/// what the revoke came to (`revoke::Report`). An id no job has yet is revoked for later.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: RevokeInput = match json_body_or_none(&headers, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let signal = match req.signal.as_deref().map(revoke::signal_name).transpose() {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e, Some("signal")),
    };
    let terminate = req.terminate.unwrap_or(false) || signal.is_some();
    match super::data::revoke(&state, &id, terminate, signal).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"), None),
    }
}

/// `POST /api/jobs/{id}/retry` with `{}` or no body (still JSON-typed, as every POST here):
/// runs a job that ended FAILURE or REVOKED again as a new job, `{"id": old, "retry": new}`;
/// the jobs its end revoked wait again, for the new one. 409 when the store refuses (not
/// final, SUCCESS, retried already), 404 for no such job.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = json_body_or_none::<NoFields>(&headers, &body) {
        return resp;
    }
    let by = format!("web@{}", state.cfg().node_host);
    let retried =
        crate::client::retry::retry(state.cfg(), state.brokers(), state.store(), &id, &by).await;
    match retried {
        Ok(new_id) => {
            tracing::info!("retry of job {id} from the web, as {new_id}");
            Json(json!({ "id": id, "retry": new_id })).into_response()
        }
        Err(e) => {
            let status = match e.downcast_ref::<crate::store::StoreError>() {
                Some(crate::store::StoreError::Refused(why)) if why.starts_with("no job") => {
                    StatusCode::NOT_FOUND
                }
                Some(crate::store::StoreError::Refused(_)) => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            json_error(status, format!("{e:#}"), None)
        }
    }
}

/// `GET /api/jobs/{id}/tree` (`id` as `/api/jobs/{id}` takes it): the whole workflow job `id`
/// is part of, from its roots:
/// `{roots, jobs: {id: {id, task, state, error}}, edges: [{child, parent, mode}]}`.
pub async fn tree(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let job = match named_job(&state, &id).await {
        Ok(Named::Job(job, _)) => job,
        Ok(Named::Refused(status, why)) => return json_error(status, why, None),
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    };
    match state.store().tree(&job.job.id).await {
        Ok(tree) => Json(tree).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    }
}

/// `GET /api/workers`: what `cm queue status --json` says.
pub async fn workers(State(state): State<AppState>) -> Response {
    Json(worker_statuses(&state).await).into_response()
}

/// A POST whose body may be left out: no body (or only whitespace) reads as `{}`, still
/// JSON-typed.
pub(super) fn json_body_or_none<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return json_body(headers, &Bytes::from_static(b"{}"));
    }
    json_body(headers, body)
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    // The content type is the cross-site protection here: a form cannot send it, and a script
    // on another site cannot without a CORS preflight, which this server never grants.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/json")
        });
    if !is_json {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json",
            None,
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}"), None))
}

fn invalid(e: Invalid) -> Response {
    json_error(StatusCode::BAD_REQUEST, e.message, Some(e.field))
}

async fn publish(state: &AppState, task: &str, messages: Vec<TaskMessage>) -> Response {
    match publish::once(state.cfg(), state.brokers(), state.store(), task, &messages).await {
        Ok(published) => {
            let batch = &published.batch;
            // A job whose unique key was held is the holder: its id, flagged.
            let ids: Vec<&str> = (messages.iter())
                .map(|m| published.shown_id(&m.id))
                .collect();
            let already: Vec<bool> = (messages.iter())
                .map(|m| published.duplicates.iter().any(|d| d.job_id == m.id))
                .collect();
            let status = if already.iter().all(|&a| a) && !already.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                [(
                    header::LOCATION,
                    format!("/cm/launch/db_stats?batch={batch}"),
                )],
                Json(json!({ "batch": batch, "ids": ids, "already_queued": already })),
            )
                .into_response()
        }
        Err(e) => json_error(publish_error_status(&e), format!("{e:#}"), None),
    }
}

/// 201 with `body`, pointing at db_stats showing `batch`.
fn created(batch: &str, body: Value) -> Response {
    let to = format!("/cm/launch/db_stats?batch={batch}");
    (StatusCode::CREATED, [(header::LOCATION, to)], Json(body)).into_response()
}

/// `POST /api/launch` with `{server, recipe, kind, hosts}`: `{batch, ids}`. With `image`, each
/// host is provisioned first and its launch waits for that: `{batch, ids, provision_ids}`
/// (the i-th launch after the i-th provision).
pub async fn launch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let req: LaunchInput = match json_body(&headers, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let pairs = match input::launch_plan(state.cfg(), &req) {
        Ok(LaunchPlan::Now(messages)) => return publish(&state, jobs::LAUNCH, messages).await,
        Ok(LaunchPlan::AfterProvision(pairs)) => pairs,
        Err(e) => return invalid(e),
    };
    let tasks = (jobs::PROVISION, jobs::LAUNCH);
    match publish::pairs(state.cfg(), state.brokers(), state.store(), tasks, &pairs).await {
        Ok(batch) => {
            let (provisions, launches): (Vec<&str>, Vec<&str>) = (pairs.iter())
                .map(|(p, l)| (p.id.as_str(), l.id.as_str()))
                .unzip();
            let body = json!({ "batch": batch, "ids": launches, "provision_ids": provisions });
            created(&batch, body)
        }
        Err(e) => json_error(publish_error_status(&e), format!("{e:#}"), None),
    }
}

/// `POST /api/provision` with `{hosts, image}`: `{batch, ids}`.
pub async fn provision(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let req: ProvisionInput = match json_body(&headers, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match input::provision_messages(state.cfg(), &req) {
        Ok(messages) => publish(&state, jobs::PROVISION, messages).await,
        Err(e) => invalid(e),
    }
}

/// `GET /healthz`: 200 `ok` when the store answers and the broker takes a connection,
/// else 503 with the reason.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let unhealthy = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store().state_of("healthz")).await {
        Err(_) => return unhealthy("status store: no answer within 3s".into()),
        Ok(Err(e)) => return unhealthy(e.to_string()),
        Ok(Ok(_)) => {}
    }
    let cfg = state.cfg();
    let name = format!("cm web healthz@{}", cfg.node_host);
    match tokio::time::timeout(HEALTH_TIMEOUT, state.brokers().connect(&name)).await {
        Err(_) => unhealthy(format!(
            "broker at {}: no answer within 3s",
            crate::config::urls::redact(&cfg.broker_url)
        )),
        Ok(Err(e)) => unhealthy(e.to_string()),
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "healthz".into()).await;
            (StatusCode::OK, "ok").into_response()
        }
    }
}

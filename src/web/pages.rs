//! The HTML pages' handlers: the launch and provision forms and their POSTs, db_stats, a
//! job's page, revoke (its button and db_stats'), db_reset, and not found. Their templates are in `render`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

use super::data::{
    named_job, pages_for, publish_error_status, snapshot, worker_statuses, JobsQuery, Named,
};
use super::input::{self, Invalid, LaunchInput, LaunchPlan, ProvisionInput};
use super::render::{
    message_page, render, store_error, JobPage, LaunchPage, MessagePage, ResetPage, StatsPage,
};
use super::session::Session;
use super::state::AppState;
use super::view::{self, Choice, JobDetail, JobView, WaitingView, WorkerView};
use crate::client::publish;
use crate::jobs;
use crate::store::{self, JobFilter};

pub async fn root() -> Redirect {
    Redirect::to("/cm/launch")
}

pub async fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "not found",
        "No such page. Try /cm/launch or /cm/launch/db_stats.",
    )
}

// ---------- launch and provision ----------

/// The launch page with what was submitted and, when refused, (form, field, why).
fn launch_page<'a>(
    state: &'a AppState,
    session: &'a Session,
    launch: &LaunchInput,
    provision: &ProvisionInput,
    error: Option<(&'static str, &'static str, String)>,
) -> LaunchPage<'a> {
    let cfg = state.cfg();
    let choices = |items: &indexmap::IndexMap<String, crate::config::Described>,
                   chosen: &Option<String>| {
        items
            .iter()
            .enumerate()
            .map(|(i, (name, d))| Choice {
                name: name.clone(),
                description: d.description.clone(),
                selected: match chosen.as_deref() {
                    Some(c) => c == name,
                    None => i == 0,
                },
            })
            .collect()
    };
    LaunchPage {
        title: "launch",
        nav: "launch",
        signed_in: session.signed_in().is_some(),
        csrf: session.csrf(),
        servers: choices(&cfg.servers, &launch.server),
        recipes: choices(&cfg.recipes, &launch.recipe),
        kind: launch.kind.clone().unwrap_or_else(|| "vm".into()),
        hosts: launch.hosts.clone().unwrap_or_default(),
        first_image: launch.image.clone().unwrap_or_default(),
        prov_hosts: provision.hosts.clone().unwrap_or_default(),
        prov_image: provision.image.clone().unwrap_or_default(),
        max_hosts: cfg.web_max_hosts,
        error,
    }
}

/// `GET /cm/launch`: both forms, first server and recipe chosen.
pub async fn launch_form(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let page = launch_page(
        &state,
        &session,
        &LaunchInput::default(),
        &ProvisionInput::default(),
        None,
    );
    render(StatusCode::OK, &page)
}

/// A form our pages post: its own fields beside the session's form token.
#[derive(Deserialize)]
struct Posted<T> {
    csrf: Option<String>,
    #[serde(flatten)]
    fields: T,
}

/// The fields of a form that is only a button (its token aside).
#[derive(Deserialize)]
pub(super) struct NoFields {}

/// A POSTed form's fields: read as `application/x-www-form-urlencoded`, then refused unless
/// its `csrf` is this session's. Every button and form of the pages comes through here.
pub(super) fn posted<T: serde::de::DeserializeOwned>(
    session: &Session,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    let form: Posted<T> = parse_form(headers, body)?;
    check_csrf(session, form.csrf.as_deref())?;
    Ok(form.fields)
}

/// The form's `csrf` field against its session's token.
pub(super) fn check_csrf(session: &Session, field: Option<&str>) -> Result<(), Response> {
    if session.is_csrf(field) {
        return Ok(());
    }
    Err(message_page(
        StatusCode::FORBIDDEN,
        "refused",
        "missing or stale form token (csrf): reload the page and submit again",
    ))
}

pub(super) fn parse_form<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(message_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad request",
            "send the form as application/x-www-form-urlencoded",
        ));
    }
    serde_urlencoded::from_bytes(body).map_err(|e| {
        message_page(
            StatusCode::BAD_REQUEST,
            "bad request",
            &format!("the form could not be read: {e}"),
        )
    })
}

/// `POST /cm/launch`: check, store PENDING, publish, and go watch the batch.
pub async fn launch(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: LaunchInput = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let rejected = |e: Invalid| {
        let page = launch_page(
            &state,
            &session,
            &form,
            &ProvisionInput::default(),
            Some(("launch", e.field, e.message)),
        );
        render(StatusCode::BAD_REQUEST, &page)
    };
    match input::launch_plan(state.cfg(), &form) {
        Ok(LaunchPlan::Now(messages)) => publish_and_watch(&state, jobs::LAUNCH, &messages).await,
        Ok(LaunchPlan::AfterProvision(pairs)) => {
            let tasks = (jobs::PROVISION, jobs::LAUNCH);
            let published =
                publish::pairs(state.cfg(), state.brokers(), state.store(), tasks, &pairs).await;
            watch(published)
        }
        Err(e) => rejected(e),
    }
}

/// `POST /cm/provision`: the same for provisioning jobs.
pub async fn provision(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: ProvisionInput = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match input::provision_messages(state.cfg(), &form) {
        Ok(messages) => publish_and_watch(&state, jobs::PROVISION, &messages).await,
        Err(e) => {
            let page = launch_page(
                &state,
                &session,
                &LaunchInput::default(),
                &form,
                Some(("provision", e.field, e.message)),
            );
            render(StatusCode::BAD_REQUEST, &page)
        }
    }
}

async fn publish_and_watch(
    state: &AppState,
    task: &str,
    messages: &[crate::celery::message::TaskMessage],
) -> Response {
    match publish::once(state.cfg(), state.brokers(), state.store(), task, messages).await {
        Ok(published) if published.duplicates.len() == messages.len() => {
            let holders: Vec<&str> = (published.duplicates.iter())
                .map(|d| d.holder.as_str())
                .collect();
            message_page(
                StatusCode::OK,
                "already queued",
                &format!(
                    "nothing new published: already queued as {} (its unique key is held)",
                    holders.join(", ")
                ),
            )
        }
        Ok(published) => watch(Ok(published.batch)),
        Err(e) => watch(Err(e)),
    }
}

/// To db_stats showing the batch published, or the page saying why nothing was.
fn watch(published: anyhow::Result<String>) -> Response {
    match published {
        Ok(batch) => {
            let to = JobsQuery {
                batch: Some(batch),
                ..JobsQuery::default()
            }
            .link(1, None);
            Redirect::to(&format!("/cm/launch/db_stats{to}")).into_response()
        }
        Err(e) => {
            let status = publish_error_status(&e);
            tracing::warn!("publishing from the web: {e:#}");
            message_page(status, "nothing published", &format!("{e:#}"))
        }
    }
}

// ---------- db_stats ----------

/// `GET /cm/launch/db_stats`: the jobs of one query, with its charts and the workers.
pub async fn db_stats(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<JobsQuery>,
) -> Response {
    let snap = match snapshot(&state, &q).await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let workers = worker_statuses(&state).await;
    let page = q.page();
    let pages = pages_for(snap.total);
    let batch = q.batch();
    let bars = view::state_bars(&snap.counts, &q);
    let cfg = state.cfg();
    let waiting_total = snap.waiting_total();
    let stats = StatsPage {
        title: "db_stats",
        nav: "db_stats",
        signed_in: session.signed_in().is_some(),
        csrf: session.csrf(),
        states: view::STATES,
        servers: cfg.servers.keys().cloned().collect(),
        recipes: cfg.recipes.keys().cloned().collect(),
        rows: snap.jobs.iter().map(|j| JobView::new(j, &batch)).collect(),
        total: snap.total,
        all: snap.counts.iter().map(|(_, n)| n).sum(),
        page,
        pages,
        prev: (page > 1).then(|| q.link(page - 1, None)),
        next: (page < pages).then(|| q.link(page + 1, None)),
        bars_height: (bars.len() as i64).max(1) * view::BAR_ROW,
        bars,
        minutes: view::minute_bars(&snap.per_minute),
        finished_30: snap.per_minute.iter().sum(),
        by_worker: snap.by_worker,
        workers: workers.iter().map(WorkerView::new).collect(),
        batch_short: batch.chars().take(8).collect(),
        hide_batch: JobsQuery {
            batch: None,
            ..q.clone()
        }
        .link(page, None),
        batch_total: snap.batch_counts.iter().map(|(_, n)| n).sum(),
        batch_counts: snap
            .batch_counts
            .iter()
            .map(|(s, n)| (s.clone(), view::state_class(s), *n))
            .collect(),
        waiting: snap.waiting.iter().map(WaitingView::new).collect(),
        waiting_total,
        waiting_link: q.link(1, Some(store::WAITING)),
        batch,
        q,
    };
    render(StatusCode::OK, &stats)
}

// ---------- one job ----------

/// `GET /cm/jobs/{id}`: the job (by its id, or a unique start or end of one), its fields,
/// result, output and history, and its revoke buttons while it is not final.
pub async fn job(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let (row, history) = match named_job(&state, &id).await {
        Ok(Named::Job(row, history)) => (row, history),
        Ok(Named::Refused(status, why)) => return message_page(status, "no such job", &why),
        Err(e) => return store_error(e),
    };
    let links = match state.store().links(&row.job.id).await {
        Ok(links) => links,
        Err(e) => return store_error(e),
    };
    let retryable =
        matches!(row.state.as_str(), store::FAILURE | store::REVOKED) && links.retried_as.is_none();
    let job = JobDetail::new(&row, &history);
    render(
        StatusCode::OK,
        &JobPage {
            title: &format!("job {}", job.short_id),
            nav: "db_stats",
            signed_in: session.signed_in().is_some(),
            csrf: session.csrf(),
            job,
            links,
            retryable,
        },
    )
}

/// `POST /cm/jobs/{id}/retry`: the job page's button; runs the job again as a new job and says
/// which (the store's refusal otherwise).
pub async fn retry(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _: NoFields = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let by = format!("web@{}", state.cfg().node_host);
    let retried =
        crate::client::retry::retry(state.cfg(), state.brokers(), state.store(), &id, &by).await;
    let message = match retried {
        Ok(new_id) => format!("job {id} runs again as job {new_id}"),
        Err(e) => match e.downcast_ref::<store::StoreError>() {
            Some(store::StoreError::Refused(why)) => {
                return message_page(StatusCode::CONFLICT, "retry", why)
            }
            _ => return store_error(format!("{e:#}")),
        },
    };
    render(
        StatusCode::OK,
        &MessagePage {
            title: "retry",
            message: &message,
            nav: "db_stats",
            signed_in: session.signed_in().is_some(),
        },
    )
}

// ---------- revoke ----------

#[derive(Deserialize)]
struct RevokeFields {
    /// Present (any value) for "revoke and terminate".
    terminate: Option<String>,
}

/// `POST /cm/jobs/{id}/revoke`: the db_stats button; says what the revoke came to.
pub async fn revoke(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: RevokeFields = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let terminate = form.terminate.is_some();
    match super::data::revoke(&state, &id, terminate, None).await {
        Ok(report) => render(
            StatusCode::OK,
            &MessagePage {
                title: "revoke",
                message: &report.describe(),
                nav: "db_stats",
                signed_in: session.signed_in().is_some(),
            },
        ),
        Err(e) => store_error(format!("{e:#}")),
    }
}

// ---------- db_reset ----------

/// `GET /cm/db_reset`: how many records there are, and the button that removes them.
pub async fn db_reset_form(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let count = match state.store().count(&JobFilter::default()).await {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    render(
        StatusCode::OK,
        &ResetPage {
            title: "db_reset",
            nav: "db_reset",
            signed_in: session.signed_in().is_some(),
            csrf: session.csrf(),
            count,
        },
    )
}

/// `POST /cm/db_reset`: clears the store (the GET only asks).
pub async fn db_reset(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _: NoFields = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match state.store().reset().await {
        Ok(n) => {
            tracing::info!("db_reset from the web: removed {n} records");
            render(
                StatusCode::OK,
                &MessagePage {
                    title: "db_reset",
                    message: &format!("removed {n} records"),
                    nav: "db_reset",
                    signed_in: session.signed_in().is_some(),
                },
            )
        }
        Err(e) => store_error(e),
    }
}

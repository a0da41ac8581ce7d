//! The HTML pages: launch and provision forms, db_stats, db_reset, login, and error pages.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::guard::{check_csrf, same_secret, TOKEN_COOKIE};
use super::input::{self, Invalid, LaunchInput, ProvisionInput};
use super::view::{self, JobView, JobsQuery, MinuteBar, StateBar};
use super::{AppState, PER_PAGE};
use crate::control::WorkerStatus;
use crate::exit::{code_for, Code};
use crate::jobs;
use crate::publishing::publish_jobs;
use crate::store::JobFilter;

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("rendering a page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    nav: &'a str,
}

/// A small page with a title and one message (errors, results, refusals).
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            nav: "",
        },
    )
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!("status store: {e}");
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "status store unavailable",
        &e.to_string(),
    )
}

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

// ---------- login ----------

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    nav: &'a str,
    wrong: bool,
}

/// `/login?token=T` sets the token cookie, then goes to the launcher.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(expected) = state.cfg().web_token.as_deref() else {
        return Redirect::to("/cm/launch").into_response();
    };
    let page = |wrong| LoginPage {
        title: "token",
        nav: "",
        wrong,
    };
    match q.token.as_deref() {
        Some(t) if same_secret(t, expected) => {
            let mut resp = Redirect::to("/cm/launch").into_response();
            let cookie = format!("{TOKEN_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Some(_) => render(StatusCode::FORBIDDEN, &page(true)),
        None => render(StatusCode::OK, &page(false)),
    }
}

// ---------- launch and provision ----------

pub struct Choice {
    pub name: String,
    pub description: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "launch.html")]
struct LaunchPage<'a> {
    title: &'a str,
    nav: &'a str,
    csrf: &'a str,
    servers: Vec<Choice>,
    recipes: Vec<Choice>,
    kind: String,
    hosts: String,
    prov_hosts: String,
    prov_image: String,
    max_hosts: usize,
    /// (form, field, message) of the rejected submission.
    error: Option<(&'static str, &'static str, String)>,
}

impl LaunchPage<'_> {
    fn bad(&self, form: &str, field: &str) -> bool {
        matches!(&self.error, Some((f, fld, _)) if *f == form && *fld == field)
    }
}

fn launch_page<'a>(
    state: &'a AppState,
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
        csrf: state.csrf(),
        servers: choices(&cfg.servers, &launch.server),
        recipes: choices(&cfg.recipes, &launch.recipe),
        kind: launch.kind.clone().unwrap_or_else(|| "vm".into()),
        hosts: launch.hosts.clone().unwrap_or_default(),
        prov_hosts: provision.hosts.clone().unwrap_or_default(),
        prov_image: provision.image.clone().unwrap_or_default(),
        max_hosts: cfg.web_max_hosts,
        error,
    }
}

pub async fn launch_form(State(state): State<AppState>) -> Response {
    let page = launch_page(
        &state,
        &LaunchInput::default(),
        &ProvisionInput::default(),
        None,
    );
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct LaunchForm {
    csrf: Option<String>,
    #[serde(flatten)]
    input: LaunchInput,
}

#[derive(Deserialize)]
struct ProvisionForm {
    csrf: Option<String>,
    #[serde(flatten)]
    input: ProvisionInput,
}

fn parse_form<T: serde::de::DeserializeOwned>(
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
pub async fn launch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: LaunchForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if let Err(resp) = check_csrf(&state, form.csrf.as_deref()) {
        return resp;
    }
    let rejected = |e: Invalid| {
        let page = launch_page(
            &state,
            &form.input,
            &ProvisionInput::default(),
            Some(("launch", e.field, e.message)),
        );
        render(StatusCode::BAD_REQUEST, &page)
    };
    match input::launch_messages(state.cfg(), &form.input) {
        Ok(messages) => publish_and_watch(&state, jobs::LAUNCH, &messages).await,
        Err(e) => rejected(e),
    }
}

/// `POST /cm/provision`: the same for provisioning jobs.
pub async fn provision(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: ProvisionForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if let Err(resp) = check_csrf(&state, form.csrf.as_deref()) {
        return resp;
    }
    match input::provision_messages(state.cfg(), &form.input) {
        Ok(messages) => publish_and_watch(&state, jobs::PROVISION, &messages).await,
        Err(e) => {
            let page = launch_page(
                &state,
                &LaunchInput::default(),
                &form.input,
                Some(("provision", e.field, e.message)),
            );
            render(StatusCode::BAD_REQUEST, &page)
        }
    }
}

async fn publish_and_watch(
    state: &AppState,
    task: &str,
    messages: &[crate::protocol::TaskMessage],
) -> Response {
    match publish_jobs(state.cfg(), state.store(), task, messages).await {
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

pub fn publish_error_status(e: &anyhow::Error) -> StatusCode {
    match code_for(e) {
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::BadArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

// ---------- db_stats ----------

pub struct WorkerView {
    pub name: String,
    pub queue: String,
    pub state: String,
    pub state_class: String,
    pub pid: String,
    pub uptime: String,
    pub memory: String,
    pub done: String,
}

impl WorkerView {
    fn new(w: &WorkerStatus) -> Self {
        Self {
            name: w.name.clone(),
            queue: w.queue.clone(),
            state: w.state.to_string(),
            state_class: w.state.replace(' ', "_"),
            pid: w.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            uptime: view::duration(w.uptime_seconds),
            memory: view::bytes(w.memory_bytes),
            done: w.jobs_done.map_or_else(|| "-".into(), |n| n.to_string()),
        }
    }
}

#[derive(Template)]
#[template(path = "db_stats.html")]
struct StatsPage<'a> {
    title: &'a str,
    nav: &'a str,
    q: JobsQuery,
    states: &'static [&'static str],
    servers: Vec<String>,
    recipes: Vec<String>,
    rows: Vec<JobView>,
    total: i64,
    all: i64,
    page: i64,
    pages: i64,
    prev: Option<String>,
    next: Option<String>,
    bars: Vec<StateBar>,
    bars_height: i64,
    minutes: Vec<MinuteBar>,
    finished_30: i64,
    by_worker: Vec<(String, i64)>,
    workers: Vec<WorkerView>,
    batch: String,
    batch_short: String,
    hide_batch: String,
    batch_total: i64,
    batch_counts: Vec<(String, String, i64)>,
}

/// Everything db_stats and `/api/jobs` show for one query.
pub struct Snapshot {
    pub jobs: Vec<crate::store::JobRow>,
    pub total: i64,
    pub counts: Vec<(String, i64)>,
    pub per_minute: Vec<i64>,
    pub by_worker: Vec<(String, i64)>,
    pub batch_counts: Vec<(String, i64)>,
}

pub async fn snapshot(
    state: &AppState,
    q: &JobsQuery,
) -> Result<Snapshot, crate::store::StoreError> {
    let store = state.store();
    let filter = q.filter(PER_PAGE);
    let jobs = store.list(&filter).await?;
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
    Ok(Snapshot {
        jobs,
        total,
        counts,
        per_minute,
        by_worker,
        batch_counts,
    })
}

pub fn pages_for(total: i64) -> i64 {
    ((total + PER_PAGE - 1) / PER_PAGE).max(1)
}

pub async fn worker_statuses(state: &AppState) -> Vec<WorkerStatus> {
    let cfg = state.cfg().clone();
    tokio::task::spawn_blocking(move || {
        let workers: Vec<_> = cfg.workers().collect();
        crate::control::status(&cfg, &workers)
    })
    .await
    .unwrap_or_default()
}

pub async fn db_stats(State(state): State<AppState>, Query(q): Query<JobsQuery>) -> Response {
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
    let stats = StatsPage {
        title: "db_stats",
        nav: "db_stats",
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
        batch,
        q,
    };
    render(StatusCode::OK, &stats)
}

// ---------- db_reset ----------

#[derive(Template)]
#[template(path = "db_reset.html")]
struct ResetPage<'a> {
    title: &'a str,
    nav: &'a str,
    csrf: &'a str,
    count: i64,
}

pub async fn db_reset_form(State(state): State<AppState>) -> Response {
    let count = match state.store().count(&JobFilter::default()).await {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    render(
        StatusCode::OK,
        &ResetPage {
            title: "db_reset",
            nav: "db_reset",
            csrf: state.csrf(),
            count,
        },
    )
}

#[derive(Deserialize)]
struct ResetForm {
    csrf: Option<String>,
}

pub async fn db_reset(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: ResetForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if let Err(resp) = check_csrf(&state, form.csrf.as_deref()) {
        return resp;
    }
    match state.store().reset().await {
        Ok(n) => {
            tracing::info!("db_reset from the web: removed {n} records");
            render(
                StatusCode::OK,
                &MessagePage {
                    title: "db_reset",
                    message: &format!("removed {n} records"),
                    nav: "db_reset",
                },
            )
        }
        Err(e) => store_error(e),
    }
}

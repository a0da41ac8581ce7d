//! The schedules page (`GET /cm/schedules`), its buttons (`POST /cm/schedules/{name}/{action}`:
//! pause, resume, run, with the session's CSRF token), and its JSON twin (`GET /api/schedules`).
//! What they show is `client::schedules::overview`, as `cm schedules` shows it.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::pages::{posted, NoFields};
use super::render::{json_error, message_page, render, store_error, MessagePage};
use super::session::Session;
use super::state::AppState;
use crate::client::schedules::{configured, overview, run_now, ScheduleView};

/// One row of the page, every value as shown.
pub struct ScheduleRow {
    pub name: String,
    pub expression: String,
    pub task: String,
    pub last_slot: String,
    pub last_how: String,
    pub job_id: Option<String>,
    /// Its last 8 characters, as db_stats shows ids.
    pub job_short: String,
    pub state: String,
    pub next_slot: String,
    pub paused: bool,
    pub in_config: bool,
    pub missed: i64,
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(crate::output::utc_seconds)
        .unwrap_or_else(|| "-".into())
}

impl ScheduleRow {
    fn new(v: &ScheduleView) -> Self {
        let last = v.last.as_ref();
        Self {
            name: v.name.clone(),
            expression: v
                .expression
                .clone()
                .unwrap_or_else(|| "(not in config)".into()),
            task: v.task.clone().unwrap_or_else(|| "-".into()),
            last_slot: time(last.map(|f| f.slot_ms)),
            last_how: last.map_or_else(String::new, |f| f.how.clone()),
            job_id: last.and_then(|f| f.job_id.clone()),
            job_short: last
                .and_then(|f| f.job_id.as_deref())
                .map(|id| {
                    id.get(id.len().saturating_sub(8)..)
                        .unwrap_or(id)
                        .to_string()
                })
                .unwrap_or_default(),
            state: match last {
                Some(f) if f.job_id.is_none() => "skipped".into(),
                Some(f) => f.state.clone().unwrap_or_else(|| "pruned".into()),
                None => "-".into(),
            },
            next_slot: time(v.next_slot_ms),
            paused: v.paused,
            in_config: v.in_config,
            missed: v.missed,
        }
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage<'a> {
    title: &'a str,
    nav: &'a str,
    signed_in: bool,
    csrf: String,
    rows: Vec<ScheduleRow>,
}

/// `GET /cm/schedules`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let views = match overview(state.cfg(), state.store()).await {
        Ok(v) => v,
        Err(e) => return store_error(e),
    };
    render(
        StatusCode::OK,
        &SchedulesPage {
            title: "schedules",
            nav: "schedules",
            signed_in: session.signed_in().is_some(),
            csrf: session.csrf().to_string(),
            rows: views.iter().map(ScheduleRow::new).collect(),
        },
    )
}

/// `GET /api/schedules`: what `cm schedules --json` says.
pub async fn api(State(state): State<AppState>) -> Response {
    match overview(state.cfg(), state.store()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    }
}

/// `POST /cm/schedules/{name}/{action}`: pause, resume or run now; says what was done.
pub async fn action(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _: NoFields = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let schedule = match configured(state.cfg(), &name) {
        Ok(s) => s,
        Err(e) => return message_page(StatusCode::NOT_FOUND, "no such schedule", &e.to_string()),
    };
    let store = state.store();
    let done = match action.as_str() {
        "pause" => store
            .set_paused(&name, true)
            .await
            .map(|()| format!("schedule {name} paused on every host")),
        "resume" => store
            .set_paused(&name, false)
            .await
            .map(|()| format!("schedule {name} resumed")),
        "run" => run_now(store, schedule).await.map(|id| {
            format!("schedule {name} fired: job {id} is PENDING; a running worker publishes it within a second")
        }),
        _ => {
            return message_page(
                StatusCode::NOT_FOUND,
                "not found",
                "a schedule's actions are pause, resume and run",
            )
        }
    };
    match done {
        Ok(message) => render(
            StatusCode::OK,
            &MessagePage {
                title: "schedules",
                message: &message,
                nav: "schedules",
                signed_in: session.signed_in().is_some(),
            },
        ),
        Err(e) => store_error(e),
    }
}

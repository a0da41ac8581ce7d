//! Every HTML response: the askama templates of the pages, rendering them, and the small
//! message pages for results, errors and refusals; and the JSON error body of `/api/`.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::data::JobsQuery;
use super::view::{Choice, JobDetail, JobView, MinuteBar, StateBar, WorkerView};

/// The page, or a plain 500 if rendering fails (a template bug, logged).
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("rendering a page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

/// The JSON twin of an error page: `{"error": ..., "field": ...}`.
pub fn json_error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.into(), "field": field })),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub nav: &'a str,
    pub signed_in: bool,
}

/// A small page with a title and one message (errors, results, refusals).
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            nav: "",
            signed_in: false,
        },
    )
}

/// 503 for a store that did not answer, logged.
pub fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::warn!("status store: {e}");
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "status store unavailable",
        &e.to_string(),
    )
}

/// `/login` asking for the token (again, if `wrong`).
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    pub signed_in: bool,
    pub wrong: bool,
    /// The page was asked for with `?token=`, which does not sign in.
    pub token_in_url: bool,
}

/// `/cm/launch`: the launch and provision forms, one of them maybe rejected.
#[derive(Template)]
#[template(path = "launch.html")]
pub struct LaunchPage<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    /// The sign-out button shows.
    pub signed_in: bool,
    pub csrf: &'a str,
    pub servers: Vec<Choice>,
    pub recipes: Vec<Choice>,
    pub kind: String,
    pub hosts: String,
    pub prov_hosts: String,
    pub prov_image: String,
    /// The launch form's "provision these hosts first, with image" (empty: launch now).
    pub first_image: String,
    pub max_hosts: usize,
    /// (form, field, message) of the rejected submission.
    pub error: Option<(&'static str, &'static str, String)>,
}

impl LaunchPage<'_> {
    /// Whether the rejected submission was `form`'s `field` (the template marks it).
    pub fn bad(&self, form: &str, field: &str) -> bool {
        matches!(&self.error, Some((f, fld, _)) if *f == form && *fld == field)
    }
}

/// `/cm/launch/db_stats`: charts, workers, one page of jobs.
#[derive(Template)]
#[template(path = "db_stats.html")]
pub struct StatsPage<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    /// The sign-out button shows.
    pub signed_in: bool,
    /// For the revoke buttons of a job's details, which the page script builds.
    pub csrf: &'a str,
    pub q: JobsQuery,
    pub states: &'static [&'static str],
    pub servers: Vec<String>,
    pub recipes: Vec<String>,
    pub rows: Vec<JobView>,
    pub total: i64,
    pub all: i64,
    pub page: i64,
    pub pages: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
    pub bars: Vec<StateBar>,
    pub bars_height: i64,
    pub minutes: Vec<MinuteBar>,
    pub finished_30: i64,
    pub by_worker: Vec<(String, i64)>,
    pub workers: Vec<WorkerView>,
    pub batch: String,
    pub batch_short: String,
    pub hide_batch: String,
    pub batch_total: i64,
    pub batch_counts: Vec<(String, String, i64)>,
    /// The newest WAITING jobs, each with what it waits for, and how many wait in all.
    pub waiting: Vec<super::view::WaitingView>,
    pub waiting_total: i64,
    /// db_stats listing every WAITING job.
    pub waiting_link: String,
}

/// `/cm/db_reset`: how many records a reset removes, and the button.
#[derive(Template)]
#[template(path = "db_reset.html")]
pub struct ResetPage<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    /// The sign-out button shows.
    pub signed_in: bool,
    pub csrf: &'a str,
    pub count: i64,
}

/// `/cm/jobs/ID`: one job, its history, and a revoke while it is not final.
#[derive(Template)]
#[template(path = "job.html")]
pub struct JobPage<'a> {
    pub title: &'a str,
    pub nav: &'a str,
    /// The sign-out button shows.
    pub signed_in: bool,
    pub csrf: &'a str,
    pub job: JobDetail,
    /// Its parents and children with their states, and its retries.
    pub links: crate::store::Links,
    /// It ended FAILURE or REVOKED and was not retried yet: the page offers a retry.
    pub retryable: bool,
}

//! The queues page (`GET /cm/queues`): each configured queue's pause and scale orders, with
//! pause/resume/scale buttons (`POST /cm/queues/{queue}/{action}` with the session's CSRF
//! token); and the JSON twins, `GET /api/queues` and `POST /api/queues/{queue}/{action}`
//! (`pause` `{"host"?, "terminate"?}`, `resume` `{"host"?}`, `scale` `{"concurrency", "host"?}`).
//! What they order is `client::flow::queue_order`, as `cm queue pause|resume|scale` orders it.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::api::json_body_or_none;
use super::pages::posted;
use super::render::{json_error, message_page, render, store_error, MessagePage};
use super::session::Session;
use super::state::AppState;
use crate::client::flow::{describe, overview, queue_order, OrderError, QueueView};
use crate::config::limits::CONCURRENCY;
use crate::store::controls::{Control, Scope};

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage<'a> {
    title: &'a str,
    nav: &'a str,
    signed_in: bool,
    csrf: String,
    rows: Vec<QueueRow>,
}

/// One queue as the page shows it.
pub struct QueueRow {
    pub queue: String,
    pub paused: bool,
    pub concurrency: u16,
    pub configured: u16,
    /// The narrower orders (a host, a worker), as "scope: what".
    pub narrower: Vec<String>,
}

impl QueueRow {
    fn new(v: &QueueView) -> Self {
        let narrower = v
            .orders
            .iter()
            .filter(|r| !r.scope.is_empty())
            .filter_map(|r| {
                let mut said = Vec::new();
                if let Some(p) = r.paused {
                    said.push(if p { "paused" } else { "resumed" }.to_string());
                }
                if let Some(n) = r.concurrency {
                    said.push(format!("concurrency {n}"));
                }
                (!said.is_empty()).then(|| format!("{}: {}", r.scope, said.join(", ")))
            })
            .collect();
        Self {
            queue: v.queue.clone(),
            paused: v.paused,
            concurrency: v.concurrency,
            configured: v.configured_concurrency,
            narrower,
        }
    }
}

/// `GET /cm/queues`.
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
        &QueuesPage {
            title: "queues",
            nav: "queues",
            signed_in: session.signed_in().is_some(),
            csrf: session.csrf().to_string(),
            rows: views.iter().map(QueueRow::new).collect(),
        },
    )
}

/// `GET /api/queues`: each configured queue with its orders.
pub async fn api(State(state): State<AppState>) -> Response {
    match overview(state.cfg(), state.store()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    }
}

/// An order's fields, from the page's form or the API's JSON; numbers as text for the form.
#[derive(Deserialize, Default)]
pub struct OrderInput {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    terminate: Option<serde_json::Value>,
    #[serde(default)]
    concurrency: Option<serde_json::Value>,
}

impl OrderInput {
    /// The order `action` asks, or what is wrong with it (and the field).
    fn control(&self, action: &str) -> Result<Control, (String, Option<&'static str>)> {
        match action {
            "pause" => Ok(Control::Pause {
                terminate: self.terminate.as_ref().is_some_and(truthy),
            }),
            "resume" => Ok(Control::Resume),
            "scale" => {
                let n = match &self.concurrency {
                    Some(serde_json::Value::Number(n)) => n.as_i64(),
                    Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                n.filter(|n| CONCURRENCY.contains(n))
                    .and_then(|n| u16::try_from(n).ok())
                    .map(Control::Scale)
                    .ok_or_else(|| {
                        (
                            format!(
                                "concurrency must be a whole number from {} to {}",
                                CONCURRENCY.start(),
                                CONCURRENCY.end()
                            ),
                            Some("concurrency"),
                        )
                    })
            }
            _ => Err(("a queue's actions are pause, resume and scale".into(), None)),
        }
    }

    fn scope(&self) -> Scope {
        match self.host.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => Scope::Host(h.to_string()),
            _ => Scope::Everywhere,
        }
    }
}

/// A checkbox's "on", JSON's true, or "true"/"1".
fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => matches!(s.as_str(), "on" | "true" | "1"),
        _ => false,
    }
}

/// Why an order was refused: the status, the message, the field at fault.
struct Refusal(StatusCode, String, Option<&'static str>);

/// Carries out `action` on `queue`; the line that says what was done.
async fn order(
    state: &AppState,
    queue: &str,
    action: &str,
    input: &OrderInput,
) -> Result<String, Refusal> {
    let control = input
        .control(action)
        .map_err(|(e, field)| Refusal(StatusCode::BAD_REQUEST, e, field))?;
    let scope = input.scope();
    let by = format!("web@{}", state.cfg().node_host);
    match queue_order(state.cfg(), state.store(), queue, &scope, control, &by).await {
        Ok(()) => {
            let done = describe(queue, &scope, control);
            tracing::info!("from the web: {done}");
            Ok(done)
        }
        Err(OrderError::UnknownQueue(e)) => {
            Err(Refusal(StatusCode::NOT_FOUND, e.to_string(), None))
        }
        Err(OrderError::Store(e)) => {
            tracing::warn!("status store: {e}");
            Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                None,
            ))
        }
    }
}

/// `POST /api/queues/{queue}/{action}`, JSON-typed (a body may be left out for pause and
/// resume): `{"queue", "action", "done"}`; 400 for a bad action or size, 404 for no such queue.
pub async fn api_action(
    State(state): State<AppState>,
    Path((queue, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input: OrderInput = match json_body_or_none(&headers, &body) {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    match order(&state, &queue, &action, &input).await {
        Ok(done) => Json(json!({"queue": queue, "action": action, "done": done})).into_response(),
        Err(Refusal(status, message, field)) => json_error(status, message, field),
    }
}

/// `POST /cm/queues/{queue}/{action}`: the page's buttons; says what was done.
pub async fn action(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((queue, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let input: OrderInput = match posted(&session, &headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match order(&state, &queue, &action, &input).await {
        Ok(done) => render(
            StatusCode::OK,
            &MessagePage {
                title: "queues",
                message: &done,
                nav: "queues",
                signed_in: session.signed_in().is_some(),
            },
        ),
        Err(Refusal(status, message, _)) => message_page(status, "refused", &message),
    }
}

//! The web launcher: `/cm/launch` publishes jobs, `/cm/launch/db_stats` watches them,
//! `/cm/db_reset` clears the store, `/cm/jobs/ID` shows a job and `/cm/jobs/ID/revoke` revokes
//! it, and `/api/` has the JSON twins.
//!
//! Everything (templates, CSS, JS) is compiled into the binary. Pages are askama templates, so
//! every value is HTML-escaped; the page script builds DOM nodes with `textContent` only.
//!
//! A request meets, in order: `access_log` (one line each, added where it is served), `metrics`
//! (the counter), `headers` (CSP, no framing, nosniff, on every response), `guard` (a
//! token-less web answers to the names of `host` only), the timeout and body limits, `guard`
//! again (the `session` cookie and its form token; the token; cross-site requests), then a
//! handler in `pages`, `login`, `api` or `assets`. `listen` accepts connections (over TLS with
//! `tls`).
//!
//! Each module imports only those below it: `session`, `host` ← `state` (what handlers share)
//! ← `data` (what pages and `/api/` both read) ← `view` (rows the templates show) ← `render`
//! (templates, message and error pages) ← `guard`, `pages`, `login`, `api`; `metrics` reads
//! `data`; `input` checks requests.

// Helpers return the ready error page as `Err(Response)`; it is built once per refused request.
#![allow(clippy::result_large_err)]

mod access_log;
mod api;
mod assets;
mod data;
mod guard;
mod headers;
mod host;
mod input;
mod listen;
mod login;
mod metrics;
mod pages;
mod queues;
mod render;
mod schedules;
mod session;
mod state;
mod tls;
mod view;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::cli::WebArgs;
use crate::config::Config;
use crate::exit::{CmError, Code};
use crate::store::Store;

pub use state::AppState;

/// A slow client cannot hold a request (its body included) longer than this: 408 after.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Forms and API bodies are a few hundred bytes; anything near this is not ours.
const BODY_LIMIT: usize = 64 * 1024;

/// Every route, with the `Host` check, sessions, auth, cross-site checks, the security
/// headers, the timeout and the body limit (the access log is added where it is served).
pub fn router(state: AppState) -> Router {
    let https = state.cfg().web_tls.is_some();
    let routes = Router::new()
        .route("/", get(pages::root))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/cm/launch", get(pages::launch_form).post(pages::launch))
        .route("/cm/provision", post(pages::provision))
        .route("/cm/launch/db_stats", get(pages::db_stats))
        .route(
            "/cm/db_reset",
            get(pages::db_reset_form).post(pages::db_reset),
        )
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/jobs/{id}/revoke", post(api::revoke))
        .route("/cm/jobs/{id}", get(pages::job))
        .route("/api/jobs/{id}/retry", post(api::retry))
        .route("/cm/jobs/{id}/retry", post(pages::retry))
        .route("/api/jobs/{id}/tree", get(api::tree))
        .route("/cm/jobs/{id}/revoke", post(pages::revoke))
        .route("/cm/schedules", get(schedules::page))
        .route("/cm/schedules/{name}/{action}", post(schedules::action))
        .route("/api/schedules", get(schedules::api))
        .route("/api/workers", get(api::workers))
        .route("/cm/queues", get(queues::page))
        .route("/cm/queues/{queue}/{action}", post(queues::action))
        .route("/api/queues", get(queues::api))
        .route("/api/queues/{queue}/{action}", post(queues::api_action))
        .route("/api/launch", post(api::launch))
        .route("/api/provision", post(api::provision))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/static/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(from_fn_with_state(state.clone(), guard::cross_site))
        .layer(from_fn_with_state(state.clone(), guard::require_token))
        .layer(from_fn_with_state(state.clone(), guard::attach_session))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(from_fn_with_state(state.clone(), guard::served_host))
        .layer(axum::middleware::from_fn(headers::secure));
    let routes = if https {
        routes.layer(axum::middleware::from_fn(headers::strict_transport))
    } else {
        routes
    };
    routes
        .layer(from_fn_with_state(state.clone(), metrics::count_request))
        .with_state(state)
}

/// `cm web`: serve in the foreground, or `--detach` and return once the child listens.
pub async fn run(cfg: &Config, args: &WebArgs) -> anyhow::Result<Code> {
    let bind = args.bind.clone().unwrap_or_else(|| cfg.web_bind.clone());
    check_exposure(cfg, &bind)?;
    // Checked here too, so a bad certificate is said before anything detaches.
    tls::acceptor(cfg)?;
    if args.detach {
        return crate::control::web::start(cfg, args.bind.as_deref()).await;
    }
    let mut ready = crate::control::web::Ready::none();
    let mut pid_lock = None;
    if args.detached {
        ready = crate::control::web::Ready::take()?;
        match crate::control::web::lock_pid_file(cfg) {
            Ok(lock) => pid_lock = Some(lock),
            Err(e) => return Err(ready.fail(e)),
        }
    }
    let result = serve(cfg, &bind, &mut ready, pid_lock.as_ref()).await;
    if let Some(lock) = pid_lock {
        let _ = std::fs::remove_file(crate::control::web::addr_file(cfg));
        lock.release();
    }
    result.map_err(|e| ready.fail(e))
}

async fn serve(
    cfg: &Config,
    bind: &str,
    ready: &mut crate::control::web::Ready,
    pid_lock: Option<&crate::control::pidfile::PidLock>,
) -> anyhow::Result<Code> {
    let tls = tls::acceptor(cfg)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| CmError::BadArgument(format!("cannot listen on {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CmError::Other(format!("address of the listener on {bind}: {e}")))?;
    // Bound first, so a port below 1024 works; the store is opened as the user we run as.
    let stderr = std::io::stderr();
    let mut files: Vec<&dyn std::os::fd::AsFd> = vec![&stderr];
    if let Some(lock) = pid_lock {
        files.push(lock.file());
    }
    if let Some(user) = crate::control::privileges::drop_if_root(cfg, &files, &[&cfg.pid_dir])? {
        tracing::info!("dropped privileges to {user}");
    }
    let store = Store::open(&cfg.store_url).await?;
    let state = AppState::listening(cfg.clone(), store.clone(), bind, Some(addr));
    let app = router(state).layer(axum::middleware::from_fn(access_log::record));
    let url = format!("{}://{addr}", scheme(cfg));
    if pid_lock.is_some() {
        crate::control::web::write_addr(cfg, &url);
    }
    ready.say(&format!("listening on {url}"));
    tracing::info!("cm web listening on {url}");
    listen::serve_connections(listener, tls, app, shutdown_signal()).await;
    store.close().await;
    Ok(Code::Success)
}

/// `https` with `[web] tls_cert`, else `http`.
pub fn scheme(cfg: &Config) -> &'static str {
    if cfg.web_tls.is_some() {
        "https"
    } else {
        "http"
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still stops us.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `cm server start`'s half: the detached server on `[web] bind`, once it listens.
pub async fn start_detached(cfg: &Config) -> anyhow::Result<crate::control::web::Started> {
    preflight(cfg)?;
    crate::control::web::spawn_server(cfg, None).await
}

/// What would stop the web on `[web] bind` from serving (exposure without a token, a
/// certificate and key that do not go together), said before `cm server start` touches a
/// worker: a stack is not left half restarted for a web that could never start.
pub fn preflight(cfg: &Config) -> anyhow::Result<()> {
    check_exposure(cfg, &cfg.web_bind)?;
    tls::acceptor(cfg)?;
    Ok(())
}

/// Refuses to listen beyond loopback without `[web] token`: the launcher publishes jobs.
fn check_exposure(cfg: &Config, bind: &str) -> Result<(), CmError> {
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .map_err(|e| {
            CmError::BadArgument(format!(
                "web bind address {bind:?} is not HOST:PORT ({e}), e.g. 127.0.0.1:8080"
            ))
        })?
        .collect();
    let loopback_only = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback_only && cfg.web_token.is_none() {
        return Err(CmError::BadArgument(format!(
            "refusing to listen on {bind} beyond loopback without a token: set [web] token in {} (or bind 127.0.0.1)",
            cfg.path.display()
        )));
    }
    Ok(())
}

//! Who may ask: the `Host` names a token-less web answers to, the request's session, the
//! optional token (as `Authorization: Bearer`, or a session signed in with it), and cross-site
//! state-changing requests. The form token (CSRF field) is checked where each form is read, in
//! `pages`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::render::{json_error, message_page};
use super::session::{Session, Who};
use super::state::AppState;

/// Without `[web] token`: 421 and one line for a request whose `Host` (or absolute URI) names
/// another server, or that names none.
pub async fn served_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.cfg().web_token.is_some() {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("?"));
    let served = state.served_hosts();
    let refused = match (host, req.uri().authority()) {
        (None, None) => Some("no Host header".to_string()),
        (_, Some(a)) if !served.serves(a.as_str()) => Some(format!("Host {:?}", a.as_str())),
        (Some(h), _) if !served.serves(h) => Some(format!("Host {h:?}")),
        _ => None,
    };
    let Some(what) = refused else {
        return next.run(req).await;
    };
    (
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "refused: {what} is not this server; without [web] token it answers only to {}\n",
            served.names().join(", ")
        ),
    )
        .into_response()
}

/// Finds the request's session and puts it in its extensions; sets the cookie of a new one.
pub async fn attach_session(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let sessions = state.sessions();
    let session = sessions.of_request(req.headers(), state.cfg().web_token.is_none());
    let minted = session.minted().map(str::to_string);
    req.extensions_mut().insert(session);
    let mut resp = next.run(req).await;
    // A handler that set the cookie itself (login, logout) has the last word.
    if let Some(id) = minted {
        if !resp.headers().contains_key(header::SET_COOKIE) {
            resp.headers_mut()
                .insert(header::SET_COOKIE, sessions.cookie(&id));
        }
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// With `[web] token` set, every request but signing in and out and the static files needs the
/// token or a session signed in with it; the response carries who it was, for the access log.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.cfg().web_token.is_none() {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if matches!(path, "/login" | "/logout") || path.starts_with("/static/") {
        return next.run(req).await;
    }
    let who = bearer(req.headers())
        .and_then(|t| state.token_name(t))
        .or_else(|| {
            req.extensions()
                .get::<Session>()
                .and_then(Session::signed_in)
        });
    if let Some(name) = who {
        let mut resp = next.run(req).await;
        resp.extensions_mut().insert(Who(name));
        return resp;
    }
    let mut resp = if wants_json(req.headers(), path) {
        json_error(
            StatusCode::UNAUTHORIZED,
            "this server needs a token: send Authorization: Bearer <token>",
            None,
        )
    } else {
        message_page(
            StatusCode::UNAUTHORIZED,
            "token needed",
            "This launcher needs its token: sign in at /login, \
             or send Authorization: Bearer <token>.",
        )
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn wants_json(headers: &HeaderMap, path: &str) -> bool {
    path.starts_with("/api/")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("application/json"))
}

/// Refuses state-changing requests that a browser says come from another site or origin
/// (token or not). Forms also carry the CSRF field; API calls need a JSON content type, which
/// no cross-site form can send.
pub async fn cross_site(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let scheme = if state.cfg().web_tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(why) = cross_site_reason(req.headers(), scheme) {
        let path = req.uri().path().to_string();
        return forbidden(req.headers(), &path, &why);
    }
    next.run(req).await
}

fn cross_site_reason(headers: &HeaderMap, scheme: &str) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // same-site is not enough: another app on this host (another port) is same-site.
        if !matches!(site, "same-origin" | "none") {
            return Some(format!(
                "cross-site request refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"));
    if origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host)) && !host.is_empty() {
        None
    } else {
        Some(format!(
            "cross-site request refused (Origin {origin} is not this server)"
        ))
    }
}

fn forbidden(headers: &HeaderMap, path: &str, why: &str) -> Response {
    if wants_json(headers, path) {
        json_error(StatusCode::FORBIDDEN, why, None)
    } else {
        message_page(StatusCode::FORBIDDEN, "refused", why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_must_be_this_host_and_scheme() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(cross_site_reason(&h, "http").is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(cross_site_reason(&h, "http").is_none());
        assert!(cross_site_reason(&h, "https").is_some(), "another scheme");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site_reason(&h, "http").is_some());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site_reason(&h, "http").is_some());
    }
}

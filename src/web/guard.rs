//! Who may ask: the optional bearer token (or its cookie), cross-site POSTs, the CSRF field.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::pages::message_page;
use super::AppState;

/// The cookie `/login?token=` sets; the same value as `Authorization: Bearer`.
pub const TOKEN_COOKIE: &str = "cm_token";

/// Equal in time independent of where the first difference is, so a token cannot be guessed
/// byte by byte from response times.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| cookie(headers, TOKEN_COOKIE))
}

/// With `[web] token` set, every request but `/login` and the static files needs the token.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.cfg().web_token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/login" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    if presented_token(req.headers()).is_some_and(|t| same_secret(t, token)) {
        return next.run(req).await;
    }
    let mut resp = if wants_json(req.headers(), path) {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "this server needs a token: send Authorization: Bearer <token>",
                "field": null
            })),
        )
            .into_response()
    } else {
        message_page(
            StatusCode::UNAUTHORIZED,
            "token needed",
            "This launcher needs its token. Open /login?token=<token> once to get a cookie, \
             or send Authorization: Bearer <token>.",
        )
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn wants_json(headers: &HeaderMap, path: &str) -> bool {
    path.starts_with("/api/")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("application/json"))
}

/// Refuses state-changing requests that a browser says come from another site. Forms also
/// carry the CSRF field; API calls need a JSON content type, which no cross-site form can send.
pub async fn cross_site(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Some(why) = cross_site_reason(req.headers()) {
        let path = req.uri().path().to_string();
        return forbidden(req.headers(), &path, &why);
    }
    next.run(req).await
}

fn cross_site_reason(headers: &HeaderMap) -> Option<String> {
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
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if origin_host == Some(host) && !host.is_empty() {
        None
    } else {
        Some(format!(
            "cross-site request refused (Origin {origin} is not this server)"
        ))
    }
}

pub fn forbidden(headers: &HeaderMap, path: &str, why: &str) -> Response {
    if wants_json(headers, path) {
        (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "error": why, "field": null })),
        )
            .into_response()
    } else {
        message_page(StatusCode::FORBIDDEN, "refused", why)
    }
}

/// The form's `csrf` field against this process's token.
pub fn check_csrf(state: &AppState, field: Option<&str>) -> Result<(), Response> {
    match field {
        Some(t) if same_secret(t, state.csrf()) => Ok(()),
        _ => Err(message_page(
            StatusCode::FORBIDDEN,
            "refused",
            "missing or stale form token (csrf): reload the page and submit again",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(cross_site_reason(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(cross_site_reason(&h).is_none());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site_reason(&h).is_some());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site_reason(&h).is_some());
    }
}

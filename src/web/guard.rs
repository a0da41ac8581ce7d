//! Who may ask: the optional bearer token (or the cookie `/login` sets), and cross-site POSTs.
//! The form token (CSRF field) is checked where each form is read, in `pages`.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::render::{json_error, message_page, render, LoginPage};
use super::state::AppState;

/// The cookie `/login?token=` sets; the same value as `Authorization: Bearer`.
const TOKEN_COOKIE: &str = "cm_token";

/// The value of the first cookie called `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `/login?token=T` sets the token cookie, then goes to the launcher.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if state.cfg().web_token.is_none() {
        return Redirect::to("/cm/launch").into_response();
    }
    let page = |wrong| LoginPage {
        title: "token",
        nav: "",
        wrong,
    };
    match q.token.as_deref() {
        Some(t) if state.is_token(t) => {
            let mut resp = Redirect::to("/cm/launch").into_response();
            let cookie = Cookie::build((TOKEN_COOKIE, t))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .build();
            // A token the header cannot carry sets no cookie; Bearer still works.
            if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Some(_) => render(StatusCode::FORBIDDEN, &page(true)),
        None => render(StatusCode::OK, &page(false)),
    }
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
    if state.cfg().web_token.is_none() {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path == "/login" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    if presented_token(req.headers()).is_some_and(|t| state.is_token(t)) {
        return next.run(req).await;
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
            "This launcher needs its token. Open /login?token=<token> once to get a cookie, \
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
    fn the_token_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie(&h, TOKEN_COOKIE), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;  cm_token=s3cret ; cm_token=second"),
        );
        assert_eq!(cookie(&h, TOKEN_COOKIE), Some("s3cret"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "cm"), None);
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

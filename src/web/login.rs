//! Signing in and out: `GET /login` shows the form, `POST /login` checks the token and starts
//! a session (its id in the cookie, never the token), `POST /logout` ends it. A token in a URL
//! (`/login?token=`) does not sign in: URLs end up in histories, logs and referrers.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

use super::pages::parse_form;
use super::render::{render, LoginPage};
use super::session::{Session, Who};
use super::state::AppState;

#[derive(Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
}

fn page(wrong: bool, token_in_url: bool) -> LoginPage<'static> {
    LoginPage {
        title: "sign in",
        nav: "",
        signed_in: false,
        wrong,
        token_in_url,
    }
}

/// `GET /login`: the form (a `?token=` is not used, and the page says so).
pub async fn form(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if state.cfg().web_token.is_none() {
        return Redirect::to("/cm/launch").into_response();
    }
    render(StatusCode::OK, &page(false, q.token.is_some()))
}

/// `POST /login` with `token=T`: a new signed-in session, then the launcher.
pub async fn submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if state.cfg().web_token.is_none() {
        return Redirect::to("/cm/launch").into_response();
    }
    let form: LoginForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(name) = form.token.as_deref().and_then(|t| state.token_name(t)) else {
        return render(StatusCode::FORBIDDEN, &page(true, false));
    };
    let sessions = state.sessions();
    let id = sessions.sign_in(name);
    let mut resp = Redirect::to("/cm/launch").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, sessions.cookie(&id));
    resp.extensions_mut().insert(Who(name));
    resp
}

/// `POST /logout`: the session ends here and its cookie is removed.
pub async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let sessions = state.sessions();
    sessions.sign_out(session.id());
    let to = if state.cfg().web_token.is_some() {
        "/login"
    } else {
        "/cm/launch"
    };
    let mut resp = Redirect::to(to).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, sessions.removal());
    if let Some(name) = session.signed_in() {
        resp.extensions_mut().insert(Who(name));
    }
    resp
}

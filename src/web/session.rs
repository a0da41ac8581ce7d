//! Sessions: a random id in the `cm_session` cookie (HttpOnly, SameSite=Strict, Secure under
//! HTTPS), never the token. Each session has its own form token (CSRF field), an HMAC of its id
//! under a key made when the web starts. Signed-in sessions (`POST /login`) live in memory only,
//! so logout ends one and a restart of the web ends them all.
//!
//! Without `[web] token` every browser gets an anonymous session on its first request (its
//! form token is all it is for). With a token, only `POST /login` makes a session: a request
//! without one never gets a cookie, which would replace a signed-in one.

use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use indexmap::IndexMap;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "cm_session";
/// Bytes of randomness in a session id (hex in the cookie).
const ID_BYTES: usize = 32;
/// Bytes of the HMAC a form token keeps (hex in the form): far beyond guessing.
const CSRF_BYTES: usize = 18;
/// Signed-in sessions kept at once; the oldest is forgotten (signed out) past this.
const MAX_SIGNED_IN: usize = 1024;

/// Who a request was let in as, for the access log: the token's name, put on the response.
#[derive(Debug, Clone, Copy)]
pub struct Who(pub &'static str);

/// This server's sessions: the form-token key and the signed-in ids.
pub struct Sessions {
    key: [u8; 32],
    /// Cookies get `Secure` when the web serves HTTPS.
    secure: bool,
    /// Session id → the name of the token it signed in with, oldest first.
    signed_in: Mutex<IndexMap<String, &'static str>>,
}

/// The session of one request, in its extensions.
#[derive(Debug, Clone)]
pub struct Session {
    id: String,
    csrf: String,
    /// The token's name, when this session signed in with it.
    signed_in: Option<&'static str>,
    /// A new anonymous session whose cookie the response sets.
    minted: bool,
}

impl Session {
    /// The form token to embed in this session's forms.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's `csrf` field is this session's form token.
    pub fn is_csrf(&self, field: Option<&str>) -> bool {
        field.is_some_and(|f| same_secret(f, &self.csrf))
    }

    pub fn signed_in(&self) -> Option<&'static str> {
        self.signed_in
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id of a new anonymous session, whose cookie the response must set.
    pub fn minted(&self) -> Option<&str> {
        self.minted.then_some(self.id.as_str())
    }
}

impl Sessions {
    pub fn new(secure: bool) -> Self {
        let mut key = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut key);
        Self {
            key,
            secure,
            signed_in: Mutex::new(IndexMap::new()),
        }
    }

    fn csrf_of(&self, id: &str) -> String {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(b"cm csrf\0");
        mac.update(id.as_bytes());
        hex(&mac.finalize().into_bytes()[..CSRF_BYTES])
    }

    fn session(&self, id: String, signed_in: Option<&'static str>, minted: bool) -> Session {
        Session {
            csrf: self.csrf_of(&id),
            id,
            signed_in,
            minted,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, IndexMap<String, &'static str>> {
        // A panic while holding the lock leaves the map whole (inserts and removes only).
        self.signed_in
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The request's session: its cookie's when that is one, else a new one (kept only when
    /// `anonymous` sessions are allowed; otherwise it lives for this request alone).
    pub fn of_request(&self, headers: &HeaderMap, anonymous: bool) -> Session {
        if let Some(id) = cookie(headers, COOKIE).filter(|id| is_id(id)) {
            let signed_in = self.known().get(id).copied();
            if signed_in.is_some() || anonymous {
                return self.session(id.to_string(), signed_in, false);
            }
        }
        self.session(new_id(), None, anonymous)
    }

    /// A new signed-in session for the token called `name`; its id goes in the cookie.
    pub fn sign_in(&self, name: &'static str) -> String {
        let id = new_id();
        let mut known = self.known();
        while known.len() >= MAX_SIGNED_IN {
            known.shift_remove_index(0);
        }
        known.insert(id.clone(), name);
        id
    }

    pub fn sign_out(&self, id: &str) {
        self.known().shift_remove(id);
    }

    /// `Set-Cookie` for session `id`: for this browser session only (no Max-Age).
    pub fn cookie(&self, id: &str) -> HeaderValue {
        self.header(Cookie::build((COOKIE, id.to_string())))
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn removal(&self) -> HeaderValue {
        self.header(Cookie::build((COOKIE, "")).max_age(cookie::time::Duration::ZERO))
    }

    fn header(&self, c: cookie::CookieBuilder<'static>) -> HeaderValue {
        let c = c
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .build();
        // Ids are hex: the header always takes them.
        HeaderValue::from_str(&c.to_string()).unwrap_or(HeaderValue::from_static(""))
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
}

fn new_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

fn is_id(s: &str) -> bool {
    s.len() == ID_BYTES * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Equal in time independent of where the first difference is, so a secret cannot be guessed
/// byte by byte from response times (the length is not secret).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {COOKIE}={value}")).expect("header"),
        );
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie(&h, COOKIE), None);
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;  cm_session=s3cret ; cm_session=second"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("s3cret"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "cm"), None);
    }

    #[test]
    fn each_session_has_its_own_form_token() {
        let sessions = Sessions::new(false);
        let a = sessions.of_request(&HeaderMap::new(), true);
        let b = sessions.of_request(&HeaderMap::new(), true);
        assert!(a.minted && b.minted);
        assert_ne!(a.csrf(), b.csrf());
        assert_eq!(a.csrf().len(), CSRF_BYTES * 2);
        let again = sessions.of_request(&with_cookie(&a.id), true);
        assert!(!again.minted);
        assert_eq!(again.csrf(), a.csrf());
        assert!(again.is_csrf(Some(a.csrf())));
        assert!(!again.is_csrf(Some(b.csrf())));
        assert!(!again.is_csrf(None));
        // Another process (a restart) has another key: old form tokens are stale.
        let restarted = Sessions::new(false).of_request(&with_cookie(&a.id), true);
        assert!(!restarted.is_csrf(Some(a.csrf())));
        // Not an id of ours: a new session.
        assert!(sessions.of_request(&with_cookie("forged"), true).minted);
    }

    #[test]
    fn only_signed_in_sessions_count_when_anonymous_ones_are_not_allowed() {
        let sessions = Sessions::new(true);
        let stranger = sessions.of_request(&with_cookie(&new_id()), false);
        assert_eq!(stranger.signed_in(), None);
        assert!(!stranger.minted, "no cookie for a session that is not kept");
        let id = sessions.sign_in("token");
        let known = sessions.of_request(&with_cookie(&id), false);
        assert_eq!(known.signed_in(), Some("token"));
        assert_eq!(known.id(), id);
        sessions.sign_out(&id);
        assert_eq!(
            sessions.of_request(&with_cookie(&id), false).signed_in(),
            None
        );
        let set = sessions.cookie(&id);
        let set = set.to_str().expect("text");
        assert!(set.starts_with(&format!("{COOKIE}={id};")), "{set}");
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set.contains(attribute), "{set}");
        }
    }

    #[test]
    fn signed_in_sessions_are_bounded() {
        let sessions = Sessions::new(false);
        let first = sessions.sign_in("token");
        for _ in 0..MAX_SIGNED_IN {
            sessions.sign_in("token");
        }
        assert_eq!(sessions.known().len(), MAX_SIGNED_IN);
        assert!(!sessions.known().contains_key(&first));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}

//! The web launcher for tests: `Web` runs `cm web` on a free loopback port and talks HTTP to it;
//! `App` drives the same router in this process (no port, no process), against the stack's
//! SQLite store and the real broker.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use tower::ServiceExt;

use super::{cm_bin, lines_of, Stack};

/// The HTTP client of the tests: redirects are answers to check, not to follow.
pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The form token in a page that has a form.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    page[at..at + 36].to_string()
}

/// `cm web --bind 127.0.0.1:0` for one stack, killed when dropped.
pub struct Web {
    child: Child,
    pub base: String,
    pub http: Client,
}

impl Web {
    pub fn start(stack: &Stack) -> Self {
        Self::start_with(stack, &[])
    }

    pub fn start_with(stack: &Stack, extra: &[&str]) -> Self {
        let log = std::fs::File::create(stack.dir.path().join("web.stderr")).expect("web log");
        let mut child = Command::new(cm_bin())
            .arg("--config")
            .arg(&stack.config)
            .args(["web", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env_remove("CM_CONFIG")
            .env_remove("CM_BROKER_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cm web");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default();
        let Some(base) = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cm web did not say where it listens: {line:?}; stderr: {}",
                std::fs::read_to_string(stack.dir.path().join("web.stderr")).unwrap_or_default()
            );
        };
        Self {
            child,
            base,
            http: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().expect("GET")
    }

    pub fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.get(path);
        let status = resp.status();
        (status, resp.json().expect("JSON body"))
    }

    /// The form token from the launch page.
    pub fn csrf(&self) -> String {
        csrf_of(&self.get("/cm/launch").text().expect("page"))
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the in-process router answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header's value; panics when it is missing.
    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("a text header")
    }
}

/// The `Host` of every in-process request (cross-site checks compare `Origin` with it; a web
/// without a token answers only to loopback names).
pub const HOST: &str = "localhost";

/// The router `cm web` serves, built by `cm::web::router` for a stack's config, in this process.
pub struct App {
    router: axum::Router,
    store: cm::store::Store,
    rt: tokio::runtime::Runtime,
    /// The session cookie the router set, sent back as a browser would (form tokens are
    /// per session).
    session: std::sync::Mutex<Option<String>>,
}

impl App {
    pub fn new(stack: &Stack) -> Self {
        let mut cfg = cm::config::Config::load(&stack.config).expect("the stack's config");
        // As `Stack::cm` removes it from the child's environment: the stack's broker, not the
        // caller's (`CM_TEST_BROKER_URL` picks the tests' broker).
        if std::env::var_os("CM_BROKER_URL").is_some() {
            let text = std::fs::read_to_string(&stack.config).expect("config");
            let table: toml::Table = toml::from_str(&text).expect("config is TOML");
            cfg.broker_url = table["broker"]["url"]
                .as_str()
                .expect("[broker] url")
                .to_string();
        }
        // One worker thread: lapin's connection tasks run beside the request.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let store = rt
            .block_on(cm::store::Store::open(&cfg.store_url))
            .expect("the stack's store");
        let router = cm::web::router(cm::web::AppState::new(cfg, store.clone()));
        Self {
            router,
            store,
            rt,
            session: std::sync::Mutex::new(None),
        }
    }

    /// Sends `req` through the router (with `Host: localhost` unless it has one, and the
    /// session cookie unless it has cookies).
    pub fn send(&self, mut req: Request<Body>) -> Reply {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert(HeaderValue::from_static(HOST));
        let mut session = self.session.lock().expect("session cookie");
        if let Some(c) = session.as_deref() {
            if !req.headers().contains_key(header::COOKIE) {
                let c = HeaderValue::from_str(c).expect("cookie");
                req.headers_mut().insert(header::COOKIE, c);
            }
        }
        let reply = self.rt.block_on(async {
            let resp = self
                .router
                .clone()
                .oneshot(req)
                .await
                .expect("the router never fails");
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("response body");
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }
        });
        if let Some(set) = reply.headers.get(header::SET_COOKIE) {
            let set = set.to_str().expect("cookie text");
            *session = set.split(';').next().map(str::to_string);
        }
        reply
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(request(Method::GET, path, None, Body::empty()))
    }

    pub fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let reply = self.get(path);
        (reply.status, reply.json())
    }

    /// The form token from the launch page.
    pub fn csrf(&self) -> String {
        csrf_of(&self.get("/cm/launch").body)
    }

    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.send(form_request(path, form))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let reply = self.send(request(
            Method::POST,
            path,
            Some("application/json"),
            Body::from(body.to_string()),
        ));
        (reply.status, reply.json())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.rt.block_on(self.store.close());
    }
}

/// A request with an optional content type, as a client would send it.
pub fn request(
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Body,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = content_type {
        req = req.header(header::CONTENT_TYPE, t);
    }
    req.body(body).expect("a valid request")
}

/// `POST path` with `form` urlencoded, as a browser submits a form.
pub fn form_request(path: &str, form: &[(&str, &str)]) -> Request<Body> {
    let body = serde_urlencoded::to_string(form).expect("form");
    request(
        Method::POST,
        path,
        Some("application/x-www-form-urlencoded"),
        Body::from(body),
    )
}

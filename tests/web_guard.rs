//! A web only its operator can drive: the `cm web` process over real HTTP (and HTTPS), and a
//! headless Chromium where the browser is the point (framing, a foreign name on loopback).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::browser::{wait_for, Browser};
use common::web::{csrf_of, Web};
use common::{queue_depth, Options, Ran, Stack};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "s3cret-guard-token";
const LAUNCH: &str = r#"{"server":"india_openstack_essex","recipe":"Hadoop","hosts":"i1"}"#;

fn token_stack() -> Stack {
    Stack::with(Options {
        extra: format!("[web]\ntoken = \"{TOKEN}\"\n"),
        ..Options::default()
    })
}

fn port_of(web: &Web) -> String {
    web.base.rsplit(':').next().expect("a port").to_string()
}

fn send(req: RequestBuilder) -> Response {
    req.send().expect("an HTTP answer")
}

/// `cm_session=ID` from a response's `Set-Cookie`, if it sets one.
fn session_cookie(resp: &Response) -> Option<String> {
    let set = resp.headers().get(SET_COOKIE)?.to_str().ok()?;
    set.split(';')
        .next()
        .filter(|kv| kv.starts_with("cm_session="))
        .map(str::to_string)
}

fn assert_nothing_published(stack: &Stack) {
    assert_eq!(queue_depth(&stack.launch), 0, "messages were published");
    assert_eq!(stack.jobs(), Vec::<Value>::new(), "jobs were stored");
}

#[test]
fn a_web_without_a_token_answers_only_to_loopback_names() {
    let stack = Stack::new();
    let web = Web::start(&stack);
    let port = port_of(&web);
    let evil = format!("evil.example:{port}");

    // The DNS-rebinding attack: a page on evil.example, its name now pointing at 127.0.0.1.
    let resp = send(
        web.http
            .post(web.url("/api/launch"))
            .header(HOST, &evil)
            .header(ORIGIN, format!("http://{evil}"))
            .header(CONTENT_TYPE, "application/json")
            .body(LAUNCH),
    );
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let why = resp.text().expect("body");
    assert_eq!(why.trim_end().lines().count(), 1, "{why}");
    assert!(
        why.contains("evil.example") && why.contains("localhost"),
        "{why}"
    );
    for path in ["/cm/db_reset", "/api/jobs", "/cm/launch", "/metrics"] {
        let resp = send(web.http.get(web.url(path)).header(HOST, &evil));
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        assert!(session_cookie(&resp).is_none(), "{path}");
        assert!(!resp.text().expect("body").contains("csrf"), "{path}");
    }
    // A name that merely starts like ours is another server too.
    let resp = send(
        web.http
            .get(web.url("/cm/launch"))
            .header(HOST, format!("localhost.evil.example:{port}")),
    );
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_nothing_published(&stack);

    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("[::1]:{port}"),
    ] {
        let resp = send(web.http.get(web.url("/cm/launch")).header(HOST, &host));
        assert_eq!(resp.status(), StatusCode::OK, "Host {host}");
    }
}

#[test]
fn with_a_token_any_name_may_ask_but_not_from_a_foreign_origin() {
    let stack = token_stack();
    let web = Web::start(&stack);
    let port = port_of(&web);

    // A name a proxy or DNS gives the server is fine: the token is the guard.
    let resp = send(
        web.http
            .get(web.url("/api/jobs"))
            .header(HOST, format!("cm.internal.example:{port}"))
            .bearer_auth(TOKEN),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        web.http
            .get(web.url("/api/jobs"))
            .header(HOST, format!("cm.internal.example:{port}")),
    );
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // State-changing requests from another origin are refused, token or not.
    let launch = |origin: Option<&str>| {
        let mut req = web
            .http
            .post(web.url("/api/launch"))
            .bearer_auth(TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .body(LAUNCH);
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        send(req).status()
    };
    assert_eq!(launch(Some("http://evil.example")), StatusCode::FORBIDDEN);
    assert_eq!(
        launch(Some(&format!("http://localhost:{port}"))),
        StatusCode::FORBIDDEN,
        "another name for this host is another origin"
    );
    assert_nothing_published(&stack);
    assert_eq!(launch(Some(&web.base)), StatusCode::CREATED);
    assert_eq!(queue_depth(&stack.launch), 1);
}

/// Every `<script` loads a file, and no element has an event-handler attribute.
fn assert_no_inline_script(path: &str, html: &str) {
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').expect("tag end")];
        assert!(
            tag.contains(" src=\"/static/"),
            "{path}: inline script {tag}"
        );
    }
    let lower = html.to_ascii_lowercase();
    for (at, _) in lower.match_indices(" on") {
        let name: String = lower[at + 3..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let after = &lower[at + 3 + name.len()..];
        assert!(
            name.is_empty() || !after.starts_with('='),
            "{path}: event handler attribute on{name}="
        );
    }
}

#[test]
fn every_response_forbids_framing_inline_script_and_sniffing() {
    let stack = Stack::new();
    stack.provision("h1").ids();
    let web = Web::start(&stack);
    let check = |resp: Response, what: &str| -> String {
        let h = resp.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no CSP"))
            .to_str()
            .expect("text");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        // Plain HTTP: HSTS is for a server that speaks HTTPS itself.
        assert!(h.get("strict-transport-security").is_none(), "{what}");
        let referrer = h["referrer-policy"].to_str().expect("text");
        assert!(
            matches!(referrer, "same-origin" | "no-referrer"),
            "{what}: {referrer}"
        );
        resp.text().expect("body")
    };
    for path in [
        "/cm/launch",
        "/cm/launch/db_stats",
        "/cm/db_reset",
        "/no/such/page",
    ] {
        let html = check(web.get(path), path);
        assert_no_inline_script(path, &html);
    }
    for path in [
        "/api/jobs",
        "/api/workers",
        "/static/cm.js",
        "/static/cm.css",
    ] {
        check(web.get(path), path);
    }
    let refused = send(
        web.http
            .get(web.url("/cm/launch"))
            .header(HOST, "evil.example"),
    );
    check(refused, "a foreign Host's refusal");

    let guarded = token_stack();
    let web = Web::start(&guarded);
    let html = check(web.get("/cm/launch"), "the token's refusal");
    assert_no_inline_script("401", &html);
    let html = check(web.get("/login"), "/login");
    assert_no_inline_script("/login", &html);
}

/// `POST /login` with the token; the answer, not followed.
fn sign_in(web: &Web, token: &str) -> Response {
    send(web.http.post(web.url("/login")).form(&[("token", token)]))
}

fn get_with(web: &Web, path: &str, cookie: &str) -> Response {
    send(web.http.get(web.url(path)).header("Cookie", cookie))
}

#[test]
fn signing_in_is_a_post_and_the_cookie_holds_a_session_not_the_token() {
    let stack = token_stack();
    let web = Web::start(&stack);

    // A token in the URL does not sign in (it would sit in histories and logs).
    let resp = web.get(&format!("/login?token={TOKEN}"));
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    let page = resp.text().expect("page");
    assert!(
        page.contains(r#"<form method="post" action="/login""#),
        "{page}"
    );
    assert!(page.contains("does not sign in"), "{page}");
    assert_eq!(web.get("/cm/launch").status(), StatusCode::UNAUTHORIZED);

    let wrong = sign_in(&web, "not-the-token");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let resp = sign_in(&web, TOKEN);
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/cm/launch");
    let set = resp.headers()[SET_COOKIE]
        .to_str()
        .expect("text")
        .to_string();
    assert!(!set.contains(TOKEN), "{set}");
    let attributes: Vec<&str> = set.split(';').skip(1).map(str::trim).collect();
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(&attribute), "{set}");
    }
    assert!(!attributes.contains(&"Secure"), "plain HTTP: {set}");
    let cookie = session_cookie(&resp).expect("a session cookie");
    assert_eq!(cookie.len(), "cm_session=".len() + 64, "{cookie}");

    let launch = get_with(&web, "/cm/launch", &cookie);
    assert_eq!(launch.status(), StatusCode::OK);
    assert!(launch.text().expect("page").contains(r#"action="/logout""#));

    // Each signed-in session has its own form token; one's is refused for the other.
    let other = session_cookie(&sign_in(&web, TOKEN)).expect("a second session");
    assert_ne!(other, cookie);
    let csrf_a = csrf_of(
        &get_with(&web, "/cm/db_reset", &cookie)
            .text()
            .expect("page"),
    );
    let csrf_b = csrf_of(&get_with(&web, "/cm/db_reset", &other).text().expect("page"));
    assert_ne!(csrf_a, csrf_b);
    let reset = |cookie: &str, csrf: &str| {
        send(
            web.http
                .post(web.url("/cm/db_reset"))
                .header("Cookie", cookie)
                .form(&[("csrf", csrf)]),
        )
        .status()
    };
    assert_eq!(reset(&cookie, &csrf_b), StatusCode::FORBIDDEN);
    assert_eq!(reset(&other, &csrf_a), StatusCode::FORBIDDEN);
    assert_eq!(reset(&cookie, &csrf_a), StatusCode::OK);

    // Logout ends the session, whoever still holds its cookie.
    let out = send(web.http.post(web.url("/logout")).header("Cookie", &cookie));
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let removal = out.headers()[SET_COOKIE].to_str().expect("text");
    assert!(
        removal.starts_with("cm_session=;") && removal.contains("Max-Age=0"),
        "{removal}"
    );
    assert_eq!(
        get_with(&web, "/cm/launch", &cookie).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&web, "/cm/launch", &other).status(),
        StatusCode::OK
    );

    // A restart of the web ends every session.
    drop(web);
    let web = Web::start(&stack);
    assert_eq!(
        get_with(&web, "/cm/launch", &other).status(),
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn form_tokens_belong_to_one_session() {
    let stack = Stack::new();
    let web = Web::start(&stack);
    // A browser's first visit: a session cookie and a form token of its own.
    let visit = |cookie: Option<&str>| {
        let mut req = web.http.get(web.url("/cm/launch"));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = send(req);
        assert_eq!(resp.status(), StatusCode::OK);
        let set = session_cookie(&resp);
        let page = resp.text().expect("page");
        (set, csrf_of(&page))
    };
    let (a, csrf_a) = visit(None);
    let (b, csrf_b) = visit(None);
    let (a, b) = (a.expect("a cookie"), b.expect("a cookie"));
    assert_ne!(a, b);
    assert_ne!(csrf_a, csrf_b);
    let (again, csrf_again) = visit(Some(&a));
    assert_eq!(again, None, "a known session gets no new cookie");
    assert_eq!(csrf_again, csrf_a);

    let launch = |cookie: Option<&str>, csrf: &str| {
        let mut req = web.http.post(web.url("/cm/launch")).form(&[
            ("csrf", csrf),
            ("server", "india_openstack_essex"),
            ("recipe", "Hadoop"),
            ("hosts", "i1"),
        ]);
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        send(req).status()
    };
    assert_eq!(launch(Some(&a), &csrf_b), StatusCode::FORBIDDEN);
    assert_eq!(launch(Some(&b), &csrf_a), StatusCode::FORBIDDEN);
    assert_eq!(launch(None, &csrf_a), StatusCode::FORBIDDEN);
    assert_nothing_published(&stack);
    assert_eq!(launch(Some(&a), &csrf_a), StatusCode::SEE_OTHER);
    assert_eq!(queue_depth(&stack.launch), 1);
}

// ---------- HTTPS ----------

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`), a certificate it signed for localhost and 127.0.0.1 (`web.pem`,
/// `web.key`), and a key that is not that certificate's (`other.key`).
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=cm test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "web.key", "-out", "web.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "web.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "web.pem",
        ],
    );
    let mut other = vec!["req", "-x509", "-days", "2", "-subj", "/CN=other"];
    other.extend(ec);
    other.extend(["-keyout", "other.key", "-out", "other.pem"]);
    openssl(dir, &other);
}

fn tls_stack(cert: &Path, key: &Path) -> Stack {
    Stack::with(Options {
        extra: format!(
            "[web]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..Options::default()
    })
}

/// `GET path` over TLS to `addr` as `name`, trusting only `ca` (PEM): the status line, the
/// head and the body; or why the TLS connection failed.
fn https_get(addr: &str, name: &str, path: &str, ca: &Path) -> Result<(String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    // The server's provider, so the test builds no other.
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    common::runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("TCP connect");
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        // rustls reports a peer that closes without close_notify; what was read is complete.
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        Ok((head.to_string(), body.to_string()))
    })
}

#[test]
fn https_serves_the_configured_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path());
    let stack = tls_stack(&certs.path().join("web.pem"), &certs.path().join("web.key"));
    let web = Web::start(&stack);
    let addr = web
        .base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not HTTPS: {}", web.base))
        .to_string();
    let ca = certs.path().join("ca.pem");

    for name in ["localhost", "127.0.0.1"] {
        let (head, body) = https_get(&addr, name, "/cm/launch", &ca).expect("HTTPS");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("press to launch"), "{body}");
        let cookie = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no cookie: {head}"));
        assert!(cookie.contains("; Secure"), "{cookie}");
        assert!(head.contains("frame-ancestors 'none'"), "{head}");
        let hsts = head
            .lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with("strict-transport-security:")
            })
            .unwrap_or_else(|| panic!("no HSTS under HTTPS: {head}"));
        assert!(hsts.contains("max-age=31536000"), "{hsts}");
    }
    // Only the configured certificate is served: a client trusting another CA refuses it.
    let refused = https_get(
        &addr,
        "localhost",
        "/cm/launch",
        &certs.path().join("other.pem"),
    );
    assert!(refused.is_err(), "{refused:?}");
    // And plain HTTP gets no page there.
    let plain = web
        .http
        .get(format!("http://{addr}/cm/launch"))
        .send()
        .and_then(|r| r.text());
    assert!(
        plain
            .as_ref()
            .map_or(true, |t| !t.contains("press to launch")),
        "{plain:?}"
    );
    drop(web);

    // Detached, it says and records where it listens with the scheme.
    let out = stack.ok(&["web", "--detach", "--bind", "127.0.0.1:0"]);
    let url = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("listening on "))
        .expect("listening line");
    assert!(url.starts_with("https://127.0.0.1:"), "{out}");
    let status = stack.ok(&["server", "status"]);
    assert!(status.contains(&format!("web      {url} pid ")), "{status}");
}

fn assert_config_error(out: &Ran, names: &[&Path]) {
    let err = &out.stderr;
    assert_eq!(out.code, Some(78), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for name in names {
        assert!(err.contains(&name.display().to_string()), "{err}");
    }
}

#[test]
fn a_certificate_that_cannot_be_used_is_a_configuration_error() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path());
    let (cert, key) = (certs.path().join("web.pem"), certs.path().join("web.key"));

    let missing = certs.path().join("missing.pem");
    let stack = tls_stack(&missing, &key);
    assert_config_error(&stack.cm(&["web", "--bind", "127.0.0.1:0"]), &[&missing]);

    // Refused before anything detaches: no server, no pid file.
    let other_key = certs.path().join("other.key");
    let stack = tls_stack(&cert, &other_key);
    let out = stack.cm(&["web", "--detach", "--bind", "127.0.0.1:0"]);
    assert_config_error(&out, &[&cert, &other_key]);
    assert!(!stack.dir.path().join("run/cm-web.pid").exists());

    // Not PEM at all.
    let junk = certs.path().join("ext.cnf");
    let stack = tls_stack(&cert, &junk);
    assert_config_error(&stack.cm(&["web", "--bind", "127.0.0.1:0"]), &[&junk]);

    let stack = tls_stack(&missing, &key);
    let out = stack.cm(&["server", "start"]);
    assert_config_error(&out, &[&missing]);
    assert!(!stack.dir.path().join("run/cm-web.pid").exists());

    // A key that is not the certificate's: `cm server start` says so before it stops or
    // starts a worker, so the stack is not left half restarted.
    let stack = tls_stack(&cert, &other_key);
    let out = stack.cm(&["server", "start"]);
    assert_config_error(&out, &[&cert, &other_key]);
    let pids: Vec<_> = std::fs::read_dir(stack.dir.path().join("run"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(pids.is_empty(), "started anyway: {pids:?}");
}

// ---------- the access log ----------

#[test]
fn every_request_leaves_one_access_log_line_without_its_query() {
    let stack = token_stack();
    let out = stack.ok(&["web", "--detach", "--bind", "127.0.0.1:0"]);
    let base = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("listening on "))
        .expect("listening line")
        .to_string();
    let http = common::web::client();
    let status = |req: RequestBuilder| send(req).status();
    assert_eq!(
        status(http.get(format!("{base}/cm/launch?secret=hunter2"))),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            http.get(format!("{base}/api/jobs?state=supersecret"))
                .bearer_auth(TOKEN)
        ),
        StatusCode::OK
    );
    let login = send(http.post(format!("{base}/login")).form(&[("token", TOKEN)]));
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&login).expect("session");
    assert_eq!(
        status(
            http.get(format!("{base}/cm/launch/db_stats"))
                .header("Cookie", &cookie)
        ),
        StatusCode::OK
    );
    stack.ok(&["server", "stop"]);

    let log = std::fs::read_to_string(stack.dir.path().join("log/cm-web.log")).expect("log");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" access ")).collect();
    let expected = [
        "access GET /cm/launch 401 - ",
        "access GET /api/jobs 200 token ",
        "access POST /login 303 token ",
        "access GET /cm/launch/db_stats 200 token ",
    ];
    assert_eq!(lines.len(), expected.len(), "{log}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
        let ms = line.rsplit(' ').next().and_then(|t| t.strip_suffix("ms"));
        assert!(
            ms.is_some_and(|n| n.parse::<u64>().is_ok()),
            "no milliseconds: {line}"
        );
    }
    for secret in ["hunter2", "supersecret", TOKEN, &cookie[11..]] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

// ---------- in a browser ----------

/// Serves `html` to every request on a free loopback port for the next 60 s; its URL.
fn serve_once(html: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    url
}

/// What a browser does with the headers: another site cannot frame db_reset, and a name of
/// another site that resolves to loopback (Chromium resolves `*.localhost` so) gets no page.
#[test]
fn browser_refuses_to_frame_the_web_and_a_foreign_name_gets_no_page() {
    use fantoccini::Locator;

    let stack = Stack::new();
    let web = Web::start(&stack);
    let port = port_of(&web);
    let browser = Browser::start(stack.dir.path());
    let base = web.base.clone();

    common::runtime().block_on(async {
        let c = browser.session().await;
        // The page itself, opened directly, has its form.
        c.goto(&format!("{base}/cm/db_reset"))
            .await
            .expect("open db_reset");
        c.find(Locator::Id("reset-form"))
            .await
            .expect("db_reset's form");

        // Another site's page frames it (a local one: Chromium keeps public pages off
        // loopback anyway): the frame stays empty of it.
        let attacker = serve_once(format!(
            r#"<!doctype html><iframe src="{base}/cm/db_reset" onload="document.title='framed'"></iframe>"#
        ));
        c.goto(&attacker).await.expect("open the framing page");
        wait_for("the frame to load", Duration::from_secs(10), || async {
            let title = c.title().await.unwrap_or_default();
            (title == "framed").then_some(())
        })
        .await;
        c.enter_frame(0).await.expect("enter the frame");
        assert!(
            c.find(Locator::Id("reset-form")).await.is_err(),
            "db_reset was shown inside another site's frame"
        );
        c.enter_parent_frame().await.expect("leave the frame");

        // DNS rebinding's name: the browser reaches 127.0.0.1 and gets a refusal, not the form.
        c.goto(&format!("http://evil.localhost:{port}/cm/db_reset"))
            .await
            .expect("open under a foreign name");
        let body = c
            .find(Locator::Css("body"))
            .await
            .expect("a body")
            .text()
            .await
            .unwrap_or_default();
        assert!(
            body.contains("evil.localhost") && body.contains("refused"),
            "{body}"
        );
        assert!(c.find(Locator::Id("reset-form")).await.is_err());
        c.close().await.expect("close the browser");
    });
}

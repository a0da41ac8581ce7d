//! Property test over what a browser (or an attacker's page) controls in a request to the web:
//! its `Host` and `Origin`. Through the router `cm web` serves, in this process (`App`): a
//! token-less web answers only to loopback names, refuses a foreign origin's POST, and every
//! answer carries the framing and script headers; and any job name in a job page's path is one
//! job, none or several, the page and its `/api/` twin alike. Bounded, so it stays quick.

mod common;

use axum::body::Body;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, HOST, ORIGIN, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode};
use common::web::{request, App};
use common::{queue_depth, Stack};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// What the web answers to without a token (its bind is the default, 127.0.0.1:8080).
const SERVED: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Served or not, said independently of the server's parser: the name, lowercased, without a
/// trailing `:digits`.
fn served(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    let name = match lower.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => lower.as_str(),
    };
    SERVED.contains(&name)
}

fn hosts() -> impl Strategy<Value = String> {
    let ours = (
        prop::sample::select(vec!["localhost", "LocalHost", "127.0.0.1", "[::1]"]),
        prop::option::of(0u32..70000),
    )
        .prop_map(|(name, port)| match port {
            Some(p) => format!("{name}:{p}"),
            None => name.to_string(),
        });
    prop_oneof![
        ours.clone(),
        // Ours with something around it: a rebinding name, a suffix, userinfo, junk.
        (ours, "[a-z0-9.@:\\[\\]-]{0,12}", any::<bool>()).prop_map(|(h, extra, before)| {
            if before {
                format!("{extra}{h}")
            } else {
                format!("{h}{extra}")
            }
        }),
        "[ -~]{0,40}",
    ]
}

#[test]
fn any_host_and_origin_is_answered_only_as_the_rules_say() {
    let stack = Stack::new();
    let app = App::new(&stack);
    let paths = vec![
        "/cm/launch",
        "/api/jobs",
        "/cm/db_reset",
        "/static/cm.js",
        "/x",
    ];
    let strategy = (
        hosts(),
        prop::option::of(hosts()),
        any::<bool>(),
        prop::sample::select(paths),
    );
    let mut runner = TestRunner::new(Config::with_cases(400));
    let result = runner.run(&strategy, |(host, origin, post, path)| {
        let Ok(host_value) = HeaderValue::from_str(&host) else {
            return Ok(());
        };
        let origin = origin.map(|o| format!("http://{o}"));
        let mut req = if post {
            // Never a complete launch or reset: nothing may change, whatever gets through.
            let path = if path == "/cm/db_reset" {
                path
            } else {
                "/api/launch"
            };
            request(
                Method::POST,
                path,
                Some("application/json"),
                Body::from("{}"),
            )
        } else {
            request(Method::GET, path, None, Body::empty())
        };
        req.headers_mut().insert(HOST, host_value);
        if let Some(o) = origin
            .as_deref()
            .and_then(|o| HeaderValue::from_str(o).ok())
        {
            req.headers_mut().insert(ORIGIN, o);
        }
        let reply = app.send(req);
        let h = &reply.headers;
        let csp = h
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        prop_assert!(csp.contains("frame-ancestors 'none'"), "{host:?}: {csp:?}");
        prop_assert_eq!(
            h.get(X_FRAME_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"DENY"[..])
        );
        prop_assert_eq!(
            h.get(X_CONTENT_TYPE_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"nosniff"[..])
        );
        if !served(&host) {
            prop_assert_eq!(
                reply.status,
                StatusCode::MISDIRECTED_REQUEST,
                "Host {:?}",
                host
            );
            return Ok(());
        }
        prop_assert_ne!(
            reply.status,
            StatusCode::MISDIRECTED_REQUEST,
            "Host {:?}",
            host
        );
        let foreign = origin
            .as_deref()
            .is_some_and(|o| !o.eq_ignore_ascii_case(&format!("http://{host}")));
        if post && foreign && HeaderValue::from_str(origin.as_deref().unwrap_or("")).is_ok() {
            prop_assert_eq!(reply.status, StatusCode::FORBIDDEN, "Origin {:?}", origin);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(queue_depth(&stack.launch), 0);
    assert!(stack.jobs().is_empty());
}

/// Any name in `/cm/jobs/NAME` and `/api/jobs/NAME` (percent-encoded, any characters, pieces of
/// real ids): a page and its twin answer alike, 200 for exactly one job (the one the name is,
/// begins or ends), 404 for none, 409 for several; never an error or a panic.
#[test]
fn any_job_name_is_one_job_none_or_several_and_page_and_api_agree() {
    let stack = Stack::new();
    let ids = stack.provision("f[1-3]").ids();
    let app = App::new(&stack);
    let piece = prop::sample::select(ids.clone()).prop_flat_map(|id| {
        let n = id.len();
        (Just(id), 0..=n, 0..=n).prop_map(|(id, a, b)| id[a.min(b)..a.max(b)].to_string())
    });
    let name = prop_oneof![
        piece.clone(),
        piece.prop_map(|p| format!(" {p}\t")),
        any::<String>(),
        "[%_*?.\\-/0-9a-f ]{0,12}",
    ];
    let mut runner = TestRunner::new(Config::with_cases(300));
    let result = runner.run(&name, |name| {
        let encoded: String = url_escape(&name);
        let page = app.get(&format!("/cm/jobs/{encoded}"));
        let api = app.get(&format!("/api/jobs/{encoded}"));
        prop_assert_eq!(page.status, api.status, "{:?}: {}", name, page.body);
        // A part is looked up without the blanks around it.
        let part = name.trim();
        let matching: Vec<&String> = ids
            .iter()
            .filter(|id| !part.is_empty() && (id.starts_with(part) || id.ends_with(part)))
            .collect();
        let expected = match matching.len() {
            0 => StatusCode::NOT_FOUND,
            1 => StatusCode::OK,
            _ => StatusCode::CONFLICT,
        };
        // The whole id is one job even where it is also part of another.
        let expected = if ids.contains(&name) {
            StatusCode::OK
        } else {
            expected
        };
        prop_assert_eq!(page.status, expected, "{:?}", name);
        if expected == StatusCode::OK {
            prop_assert_eq!(&api.json()["job"]["id"], &serde_json::json!(matching[0]));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// `text` as one percent-encoded path segment.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

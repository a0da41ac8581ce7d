//! Property test over what a browser (or an attacker's page) controls in a request to the web:
//! its `Host` and `Origin`. Through the router `cm web` serves, in this process (`App`): a
//! token-less web answers only to loopback names, refuses a foreign origin's POST, and every
//! answer carries the framing and script headers. Bounded, so it stays quick.

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

//! The web launcher against the real broker and store. Requests go through the router in this
//! process (`App`) unless the process itself is under test: binding, detaching, timeouts on a
//! real socket, the token beyond loopback, and a headless Chromium on a real port (`Web`).

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, LOCATION, ORIGIN};
use axum::http::{HeaderValue, Method, StatusCode};
use common::browser::{click, open, screenshot, screenshot_dir, text, texts, wait_for, Browser};
use common::web::{client, form_request, request, App, Web, HOST};
use common::{dead_broker_url, eventually, queue_depth, read_pid, KillOnDrop, Options, Stack};
use serde_json::{json, Value};

/// A recipe whose description tries to inject a script into the page.
const EVIL: &str = r#"
[web]
max_hosts = 5
[servers.india_openstack_essex]
description = "FutureGrid india, OpenStack Essex"
[servers.sierra_openstack_grizzly]
description = "FutureGrid sierra"
[recipes.Hadoop]
description = "A Hadoop cluster"
[recipes."Slurm Cluster"]
description = "<script>alert('pwned')</script> & friends"
"#;

fn evil_stack() -> Stack {
    Stack::with(Options {
        extra: EVIL.into(),
        ..Options::default()
    })
}

fn assert_nothing_published(stack: &Stack) {
    assert_eq!(queue_depth(&stack.launch), 0, "messages were published");
    assert_eq!(queue_depth(&stack.prov), 0, "messages were published");
    assert_eq!(stack.jobs(), Vec::<Value>::new(), "jobs were stored");
}

#[test]
fn pages_render_and_escape_what_the_config_says() {
    let stack = evil_stack();
    let app = App::new(&stack);

    let resp = app.get("/cm/launch");
    assert_eq!(resp.status, StatusCode::OK);
    let page = resp.body;
    for needle in [
        "press to launch",
        r#"name="server""#,
        r#"name="recipe""#,
        r#"name="kind""#,
        r#"name="hosts""#,
        r#"name="image""#,
        r#"action="/cm/provision""#,
        "india_openstack_essex",
        "FutureGrid india, OpenStack Essex",
        "Slurm Cluster",
    ] {
        assert!(page.contains(needle), "launch page lacks {needle:?}");
    }
    assert!(!page.contains("<script>alert"), "description not escaped");
    assert!(page.contains("&#60;script&#62;alert(&#39;pwned&#39;)&#60;/script&#62; &#38; friends"));

    for path in [
        "/cm/launch/db_stats",
        "/cm/db_reset",
        "/cm/launch/db_stats?page=7&state=SUCCESS",
    ] {
        assert_eq!(app.get(path).status, StatusCode::OK, "{path}");
    }
    let page = app
        .get("/cm/launch/db_stats?batch=%3Cscript%3Ex%3C%2Fscript%3E&server=%3Cb%3E&page=x")
        .body;
    assert!(!page.contains("<script>x") && page.contains("&#60;script&#62;x"));
    let css = app.get("/static/cm.css");
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header(CONTENT_TYPE), "text/css; charset=utf-8");
    let js = app.get("/static/cm.js").body;
    assert!(
        !js.contains("innerHTML"),
        "the page script must not use innerHTML"
    );
    assert_eq!(app.get("/static/nope.js").status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/nope").status, StatusCode::NOT_FOUND);
    let root = app.get("/");
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.header(LOCATION), "/cm/launch");
}

#[test]
fn launch_publishes_one_job_per_host_and_shows_the_batch() {
    let stack = evil_stack();
    let app = App::new(&stack);
    let csrf = app.csrf();
    let resp = app.post_form(
        "/cm/launch",
        &[
            ("csrf", &csrf),
            ("server", "sierra_openstack_grizzly"),
            ("recipe", "Slurm Cluster"),
            ("kind", "baremetal"),
            ("hosts", "i[1-3]"),
        ],
    );
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let to = resp.header(LOCATION).to_string();
    let batch = to
        .strip_prefix("/cm/launch/db_stats?batch=")
        .expect("redirect to db_stats?batch=")
        .to_string();
    assert_eq!(queue_depth(&stack.launch), 3);
    let stored = stack.jobs();
    assert_eq!(stored.len(), 3);
    let mut hosts: Vec<_> = stored
        .iter()
        .map(|j| j["hosts"].as_str().unwrap_or(""))
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["i1", "i2", "i3"]);
    for j in &stored {
        assert_eq!(j["batch"], json!(batch));
        assert_eq!(j["state"], "PENDING");
        assert_eq!(j["server"], "sierra_openstack_grizzly");
        assert_eq!(j["recipe"], "Slurm Cluster");
        assert_eq!(j["kind"], "baremetal");
    }
    let page = app.get(&to).body;
    assert_eq!(page.matches(r#"<tr class="job new""#).count(), 3, "{page}");
    assert!(page.contains(&batch[..8]));

    // Provisioning goes to its own queue the same way.
    let resp = app.post_form(
        "/cm/provision",
        &[("csrf", &csrf), ("hosts", "h[1-2]"), ("image", "ubuntu")],
    );
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(queue_depth(&stack.prov), 2);
}

#[test]
fn bad_input_is_a_400_naming_the_field_and_publishes_nothing() {
    let stack = evil_stack();
    let app = App::new(&stack);
    let csrf = app.csrf();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("server", "nowhere"), ("recipe", "Hadoop"), ("hosts", "i1")],
            "server",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Nope"),
                ("hosts", "i1"),
            ],
            "recipe",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("hosts", "i[1-"),
            ],
            "hosts",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("hosts", "i[1-6]"),
            ],
            "hosts",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("hosts", "i[1-999999999999]"),
            ],
            "hosts",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("hosts", ""),
            ],
            "hosts",
        ),
        (
            &[
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("kind", "mainframe"),
                ("hosts", "i1"),
            ],
            "kind",
        ),
        (&[], "server"),
    ];
    for (fields, field) in cases {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = app.post_form("/cm/launch", &form);
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{fields:?}");
        let page = resp.body;
        assert!(
            page.contains(&format!(r#"data-field="{field}""#)),
            "{fields:?} should name {field}: {page}"
        );
    }
    let resp = app.post_form(
        "/cm/provision",
        &[("csrf", &csrf), ("hosts", "h1"), ("image", "")],
    );
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.body.contains(r#"data-field="image""#));
    // The rejected value is shown back escaped.
    let resp = app.post_form(
        "/cm/launch",
        &[
            ("csrf", &csrf),
            ("server", "<b>x</b>"),
            ("recipe", "Hadoop"),
            ("hosts", "i1"),
        ],
    );
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let page = resp.body;
    assert!(!page.contains("<b>x</b>") && page.contains("&#60;b&#62;x&#60;/b&#62;"));

    // The JSON twin says the same in JSON.
    let (status, body) = app.post_json(
        "/api/launch",
        &json!({"server": "india_openstack_essex", "recipe": "Nope", "hosts": "i1"}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "recipe");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Nope")));
    let (status, body) = app.post_json(
        "/api/launch",
        &json!({"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": "i[1-9]"}),
    );
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("hosts"))
    );
    let resp = app.send(request(
        Method::POST,
        "/api/launch",
        Some("application/json"),
        Body::from("{not json"),
    ));
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);

    assert_nothing_published(&stack);
}

#[test]
fn posts_without_the_form_token_or_from_another_site_are_refused() {
    let stack = evil_stack();
    let app = App::new(&stack);
    let csrf = app.csrf();
    let good = [
        ("server", "india_openstack_essex"),
        ("recipe", "Hadoop"),
        ("hosts", "i1"),
    ];
    let resp = app.post_form("/cm/launch", &good);
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "no csrf field");
    let mut wrong = vec![("csrf", "00000000-0000-0000-0000-000000000000")];
    wrong.extend_from_slice(&good);
    assert_eq!(
        app.post_form("/cm/launch", &wrong).status,
        StatusCode::FORBIDDEN
    );

    let mut with_token = vec![("csrf", csrf.as_str())];
    with_token.extend_from_slice(&good);
    let cross = |origin: Option<&str>, site: Option<&str>, path: &str| {
        let mut req = form_request(path, &with_token);
        if let Some(o) = origin {
            req.headers_mut()
                .insert(ORIGIN, HeaderValue::from_str(o).expect("origin"));
        }
        if let Some(s) = site {
            req.headers_mut()
                .insert("sec-fetch-site", HeaderValue::from_str(s).expect("site"));
        }
        app.send(req).status
    };
    assert_eq!(
        cross(Some("http://evil.example"), None, "/cm/launch"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        cross(None, Some("cross-site"), "/cm/launch"),
        StatusCode::FORBIDDEN
    );
    // Another app on this host (another port) is same-site, not same-origin.
    assert_eq!(
        cross(None, Some("same-site"), "/cm/launch"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        cross(Some("http://evil.example"), None, "/cm/db_reset"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post_form("/cm/db_reset", &[]).status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post_form("/cm/provision", &[("hosts", "h1"), ("image", "x")])
            .status,
        StatusCode::FORBIDDEN
    );

    // The API takes no form token, but only JSON, and not from another origin.
    let api = |content_type: &str, origin: Option<&str>| {
        let mut req = request(
            Method::POST,
            "/api/launch",
            Some(content_type),
            Body::from(r#"{"server":"india_openstack_essex","recipe":"Hadoop","hosts":"i1"}"#),
        );
        if let Some(o) = origin {
            req.headers_mut()
                .insert(ORIGIN, HeaderValue::from_str(o).expect("origin"));
        }
        app.send(req).status
    };
    assert_eq!(api("text/plain", None), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        api("application/x-www-form-urlencoded", None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        api("application/json", Some("http://evil.example")),
        StatusCode::FORBIDDEN
    );

    assert_nothing_published(&stack);

    // Same origin with the right token goes through.
    let origin = format!("http://{HOST}");
    assert_eq!(
        cross(Some(&origin), Some("same-origin"), "/cm/launch"),
        StatusCode::SEE_OTHER
    );
    assert_eq!(queue_depth(&stack.launch), 1);
}

#[test]
fn db_reset_asks_first_and_clears_on_post() {
    let stack = Stack::new();
    stack.launch().hosts("i[1-2]").ids();
    let app = App::new(&stack);

    let resp = app.get("/cm/db_reset");
    assert_eq!(resp.status, StatusCode::OK);
    let page = resp.body;
    assert!(page.contains(r#"<form method="post" action="/cm/db_reset""#));
    assert!(page.contains(r#"<strong id="count">2</strong>"#), "{page}");
    assert_eq!(stack.jobs().len(), 2, "GET must not clear");

    let csrf = app.csrf();
    let resp = app.post_form("/cm/db_reset", &[("csrf", &csrf)]);
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.body.contains("removed 2 records"));
    assert!(stack.jobs().is_empty());
    let resp = app.post_form("/cm/db_reset", &[("csrf", &csrf)]);
    assert!(resp.body.contains("removed 0 records"));
}

#[test]
fn api_twins_return_json() {
    let stack = Stack::new();
    let app = App::new(&stack);
    let (status, body) = app.post_json(
        "/api/launch",
        &json!({"server": "india_openstack_essex", "recipe": "Hadoop", "kind": "vm", "hosts": "i[1-3]"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let batch = body["batch"].as_str().expect("batch").to_string();
    let ids: Vec<String> = serde_json::from_value(body["ids"].clone()).expect("ids");
    assert_eq!(ids.len(), 3);
    assert_eq!(queue_depth(&stack.launch), 3);

    let (status, list) = app.get_json("/api/jobs");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 3);
    assert_eq!(list["counts"], json!({"PENDING": 3}));
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(3));
    assert_eq!(list["page"], 1);
    assert_eq!(
        list["finished_per_minute"].as_array().map(Vec::len),
        Some(30)
    );
    let listed: Vec<&str> = list["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    for id in &ids {
        assert!(listed.contains(&id.as_str()));
    }

    let (_, filtered) = app.get_json("/api/jobs?state=SUCCESS");
    assert_eq!(filtered["total"], 0);
    assert_eq!(
        filtered["counts"],
        json!({"PENDING": 3}),
        "counts ignore the state filter"
    );
    let (_, by_recipe) = app.get_json("/api/jobs?recipe=Ganglia");
    assert_eq!(
        (by_recipe["total"].clone(), by_recipe["counts"].clone()),
        (json!(0), json!({}))
    );
    let (_, with_batch) = app.get_json(&format!("/api/jobs?batch={batch}"));
    assert_eq!(with_batch["batch"]["total"], 3);
    let (_, paged) = app.get_json("/api/jobs?page=2");
    assert_eq!(paged["jobs"], json!([]));

    let (status, one) = app.get_json(&format!("/api/jobs/{}", ids[0]));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["job"]["id"], json!(ids[0]));
    assert_eq!(one["job"]["batch"], json!(batch));
    assert_eq!(one["history"][0]["state"], "PENDING");
    let (status, missing) = app.get_json("/api/jobs/no-such-job");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"].is_string());

    let (status, workers) = app.get_json("/api/workers");
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = workers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["p1", "p2", "l1", "l2"]);
    assert!(workers
        .as_array()
        .into_iter()
        .flatten()
        .all(|w| w["state"] == "stopped"));

    let (status, body) = app.post_json(
        "/api/provision",
        &json!({"hosts": "h[1-2]", "image": "ubuntu"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(queue_depth(&stack.prov), 2);
}

#[test]
fn healthz_checks_store_and_broker() {
    let stack = Stack::new();
    let app = App::new(&stack);
    let resp = app.get("/healthz");
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, "ok");

    let dead = Stack::with(Options {
        broker: dead_broker_url(),
        ..Options::default()
    });
    let app = App::new(&dead);
    let resp = app.get("/healthz");
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.body.contains("broker"));
    // And a launch against it publishes nothing and says why.
    let csrf = app.csrf();
    let resp = app.post_form(
        "/cm/launch",
        &[
            ("csrf", &csrf),
            ("server", "india_openstack_essex"),
            ("recipe", "Hadoop"),
            ("hosts", "i1"),
        ],
    );
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(dead.jobs().is_empty());
}

/// `/metrics` as (series, value): every line that is not a comment must be `name{labels} value`.
fn metrics(web: &Web) -> Vec<(String, f64)> {
    let resp = web.get("/metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()[CONTENT_TYPE]
        .to_str()
        .expect("type")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().expect("body");
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        let (name, labels) = series.split_at(name_end);
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
            "bad labels in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

// Over the real binary: a worker counts as up only if /proc shows it running the binary that
// asks, and in-process that would be this test binary, not cm.
#[test]
fn metrics_count_jobs_by_state_with_a_run_time_histogram() {
    let stack = Stack::with(Options {
        step_seconds: (0.01, 0.02),
        ..Options::default()
    });
    stack.start(&["l1", "l2"]);
    stack.launch().hosts("i[1-5]").wait().ids();
    let web = Web::start(&stack);
    let m = metrics(&web);
    assert_eq!(
        sample(&m, r#"cm_jobs{state="SUCCESS"}"#),
        Some(5.0),
        "{m:?}"
    );
    assert_eq!(
        sample(&m, "cm_job_duration_seconds_count"),
        Some(5.0),
        "{m:?}"
    );
    assert_eq!(
        sample(&m, r#"cm_job_duration_seconds_bucket{le="+Inf"}"#),
        Some(5.0)
    );
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(s, _)| s.starts_with("cm_job_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 11, "{m:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // Each simulated launch step sleeps 10-20 ms, so no job ran under 10 ms or over 60 s.
    assert_eq!(buckets[0], 0.0, "{m:?}");
    assert_eq!(buckets[9], 5.0, "{m:?}");
    let sum = sample(&m, "cm_job_duration_seconds_sum").expect("sum");
    assert!((0.04..60.0).contains(&sum), "{sum}");
    let queue = |name: &str, q: &str| sample(&m, &format!("{name}{{queue=\"{q}\"}}"));
    assert_eq!(queue("cm_workers_up", &stack.launch), Some(2.0), "{m:?}");
    assert_eq!(queue("cm_workers_up", &stack.prov), Some(0.0), "{m:?}");
    assert_eq!(queue("cm_queue_depth", &stack.launch), Some(0.0), "{m:?}");
    assert!(sample(&m, "cm_web_requests_total").is_some_and(|n| n >= 1.0));

    // With the broker down the depths are left out; the rest is still there.
    let dead = Stack::with(Options {
        broker: dead_broker_url(),
        ..Options::default()
    });
    let web = Web::start(&dead);
    let m = metrics(&web);
    assert!(
        !m.iter().any(|(s, _)| s.starts_with("cm_queue_depth")),
        "{m:?}"
    );
    assert_eq!(
        sample(&m, "cm_job_duration_seconds_count"),
        Some(0.0),
        "{m:?}"
    );
    assert!(!m.iter().any(|(s, _)| s.starts_with("cm_jobs{")), "{m:?}");
}

#[test]
fn a_token_guards_everything_and_beyond_loopback_is_refused_without_one() {
    let open = Stack::new();
    let err = open.fails(&["web", "--bind", "0.0.0.0:0"], 64);
    assert!(err.contains("token") && err.lines().count() == 1, "{err}");

    let stack = Stack::with(Options {
        extra: "[web]\ntoken = \"s3cret-token\"\n".into(),
        ..Options::default()
    });
    let web = Web::start(&stack);
    assert_eq!(web.get("/cm/launch").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(web.get("/api/jobs").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(web.get("/healthz").status(), StatusCode::UNAUTHORIZED);
    let bearer = |path: &str, token: &str| {
        web.http
            .get(web.url(path))
            .bearer_auth(token)
            .send()
            .expect("GET")
            .status()
    };
    assert_eq!(bearer("/api/jobs", "s3cret-token"), StatusCode::OK);
    assert_eq!(
        bearer("/api/jobs", "s3cret-tokem"),
        StatusCode::UNAUTHORIZED
    );

    // Signing in is a form POST; the cookie holds a session id, not the token.
    let login = |token: &str| {
        web.http
            .post(web.url("/login"))
            .form(&[("token", token)])
            .send()
            .expect("POST")
    };
    assert_eq!(login("wrong").status(), StatusCode::FORBIDDEN);
    let resp = login("s3cret-token");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.starts_with("cm_session="), "{cookie}");
    assert!(!cookie.contains("s3cret-token"), "{cookie}");
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    for attribute in ["Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(&attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value");
    let with_cookie = web
        .http
        .get(web.url("/cm/launch/db_stats"))
        .header("Cookie", session)
        .send()
        .expect("GET");
    assert_eq!(with_cookie.status(), StatusCode::OK);
}

#[test]
fn detach_runs_in_the_background_with_a_pid_file() {
    let stack = Stack::new();
    let out = stack.ok(&["web", "--detach", "--bind", "127.0.0.1:0"]);
    let base = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("listening on "))
        .expect("listening line")
        .to_string();
    let pid_file = stack.web_pid_file();
    let pid = read_pid(&pid_file);
    let guard = KillOnDrop(pid);
    assert!(common::locked(&pid_file));
    let resp = client().get(format!("{base}/healthz")).send().expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);

    let again = stack.cm(&["web", "--detach", "--bind", "127.0.0.1:0"]);
    assert!(again.code != Some(0), "{again:?}");
    assert!(again.stderr.contains("already running"), "{again:?}");

    common::signal(pid, common::Signal::SIGTERM);
    eventually(
        Duration::from_secs(10),
        "cm web to exit and release its pid file",
        || !pid_file.exists() && !common::alive(pid),
    );
    drop(guard);
    assert!(std::fs::read_to_string(stack.dir.path().join("log/cm-web.log")).is_ok());
}

#[test]
fn db_stats_pages_through_100k_jobs() {
    let stack = Stack::new();
    let app = App::new(&stack);
    let store_url = cm::config::StoreLocation::SqliteFile(stack.store_file());
    common::runtime().block_on(async {
        let store = cm::store::Store::open(&store_url).await.expect("store");
        let t0 = cm::store::now_ms() - 100_000 * 10;
        let servers = ["india_openstack_essex", "sierra_openstack_grizzly"];
        for chunk in 0..20 {
            let batch: Vec<_> = (0..5_000)
                .map(|i| {
                    let n = chunk * 5_000 + i;
                    cm::store::NewJob {
                        id: format!("seed-{n:06}"),
                        task: "cm.launch".into(),
                        queue: stack.launch.clone(),
                        args: "[]".into(),
                        server: Some(servers[n % 2].into()),
                        recipe: Some("Hadoop".into()),
                        kind: Some("vm".into()),
                        hosts: Some(format!("h{n}")),
                        batch: Some(format!("seed-{chunk}")),
                        submitted_ms: t0 + n as i64 * 10,
                        options: Default::default(),
                    }
                })
                .collect();
            store.insert_pending(&batch).await.expect("seed");
        }
        store.close().await;
    });
    let paths = [
        "/api/jobs",
        "/api/jobs?page=1500",
        "/api/jobs?state=PENDING&server=india_openstack_essex&page=3",
        "/cm/launch/db_stats",
        "/cm/launch/db_stats?state=PENDING&page=900",
    ];
    // Timing belongs to bench/ (docs/BENCHMARKS.md); here: every page answers, correctly.
    for path in paths {
        assert_eq!(app.get(path).status, StatusCode::OK, "{path}");
    }
    let (_, body) = app.get_json("/api/jobs?page=2");
    assert_eq!(body["total"], 100_000);
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(50));
    assert_eq!(body["jobs"][0]["id"], "seed-099949", "newest first");
}

#[test]
fn browser_launches_watches_live_and_resets() {
    use fantoccini::Locator;

    let stack = Stack::with(Options {
        step_seconds: (0.1, 0.3),
        ..Options::default()
    });
    stack.start(&[]);
    // Some other work in the table, so the batch highlight has something to stand out from.
    stack.provision("n[1-4]").ids();
    let web = Web::start(&stack);
    let browser = Browser::start(stack.dir.path());
    let shots = screenshot_dir(stack.dir.path());
    let base = web.base.clone();

    common::runtime().block_on(async {
        let c = browser.session().await;

        open(&c, &format!("{base}/cm/launch")).await;
        let form = c
            .find(Locator::Css("#launch-form"))
            .await
            .expect("launch form");
        form.find(Locator::Css("select[name=server]"))
            .await
            .expect("server")
            .select_by_value("sierra_openstack_grizzly")
            .await
            .expect("choose server");
        form.find(Locator::Css("select[name=recipe]"))
            .await
            .expect("recipe")
            .select_by_value("Hadoop")
            .await
            .expect("choose recipe");
        let desc = texts(&c, "#launch-form .desc").await;
        assert!(
            desc.iter().any(|d| d.contains("Hadoop")),
            "recipe description follows the choice: {desc:?}"
        );
        form.find(Locator::Css("input[name=hosts]"))
            .await
            .expect("hosts")
            .send_keys("i[1-3]")
            .await
            .expect("type hosts");
        screenshot(&c, &shots, "launch.png").await;
        click(
            &c,
            Locator::XPath("//button[normalize-space(.)='press to launch']"),
        )
        .await;

        let url = wait_for("db_stats?batch=", Duration::from_secs(20), || async {
            c.current_url().await.ok().filter(|u| {
                u.path() == "/cm/launch/db_stats"
                    && u.query().is_some_and(|q| q.starts_with("batch="))
            })
        })
        .await;
        let batch = url
            .query()
            .unwrap_or_default()
            .trim_start_matches("batch=")
            .to_string();
        // Set on this page: still there later means the page was never reloaded.
        c.execute("window.cmNoReload = true; return true;", vec![])
            .await
            .expect("mark page");

        let states = wait_for(
            "the 3 launched jobs to reach SUCCESS",
            Duration::from_secs(60),
            || async {
                let s = texts(&c, "#jobs-body tr.job.new td.state").await;
                (s.len() == 3 && s.iter().all(|t| t == "SUCCESS")).then_some(s)
            },
        )
        .await;
        assert_eq!(states.len(), 3);
        let still = c
            .execute("return window.cmNoReload === true;", vec![])
            .await
            .expect("check mark");
        assert_eq!(
            still,
            json!(true),
            "db_stats reloaded instead of updating itself"
        );
        let batch_text = text(&c, "#batch").await;
        assert!(
            batch_text.contains(&batch[..8]) && batch_text.contains("SUCCESS 3"),
            "{batch_text}"
        );

        // A click shows the job's history in a row below it.
        click(&c, Locator::Css("#jobs-body tr.job.new")).await;
        let history = wait_for("the job's history", Duration::from_secs(10), || async {
            let t = texts(&c, "#jobs-body tr.details").await;
            t.into_iter()
                .next()
                .filter(|t| t.contains("PENDING") && t.contains("SUCCESS"))
        })
        .await;
        assert!(
            history.contains("running") && history.contains("active"),
            "{history}"
        );
        // Let the provisioning jobs finish too, so the picture shows a settled table.
        wait_for("every job final", Duration::from_secs(60), || async {
            let s = texts(&c, "#jobs-body tr.job td.state").await;
            (s.len() == 7 && s.iter().all(|t| t == "SUCCESS")).then_some(())
        })
        .await;
        screenshot(&c, &shots, "db_stats.png").await;

        open(&c, &format!("{base}/cm/db_reset")).await;
        let count = text(&c, "#count").await;
        assert_eq!(count, "7");
        screenshot(&c, &shots, "db_reset.png").await;
        click(
            &c,
            Locator::XPath("//button[normalize-space(.)='remove all job records']"),
        )
        .await;
        let message = wait_for("the reset result", Duration::from_secs(10), || async {
            let t = texts(&c, "#message").await;
            t.into_iter().next().filter(|t| t.starts_with("removed"))
        })
        .await;
        assert_eq!(message, "removed 7 records");

        open(&c, &format!("{base}/cm/launch/db_stats")).await;
        wait_for("an empty job table", Duration::from_secs(10), || async {
            let rows = texts(&c, "#jobs-body tr.job").await;
            let empty = texts(&c, "#jobs-body tr.empty").await;
            (rows.is_empty() && empty == ["no jobs"]).then_some(())
        })
        .await;
        c.close().await.expect("close the browser");
    });
    assert!(stack.jobs().is_empty());
}

/// A queued job's details on db_stats offer a revoke; clicking it ends the job REVOKED.
#[test]
fn browser_revokes_a_queued_job_from_its_details() {
    use fantoccini::Locator;

    // No worker runs: the job stays PENDING until revoked.
    let stack = Stack::new();
    let id = stack.provision("r1").id();
    let web = Web::start(&stack);
    let browser = Browser::start(stack.dir.path());
    let base = web.base.clone();

    common::runtime().block_on(async {
        let c = browser.session().await;
        open(&c, &format!("{base}/cm/launch/db_stats")).await;
        wait_for("the job's row", Duration::from_secs(10), || async {
            let rows = texts(&c, "#jobs-body tr.job").await;
            (rows.len() == 1).then_some(())
        })
        .await;
        click(&c, Locator::Css("#jobs-body tr.job")).await;
        let button = wait_for("the revoke button", Duration::from_secs(10), || async {
            c.find(Locator::XPath(
                "//tr[contains(@class,'details')]//form[contains(@class,'revoke')]//button[normalize-space(.)='revoke']",
            ))
            .await
            .ok()
        })
        .await;
        button.click().await.expect("click revoke");
        wait_for("the revoke's answer", Duration::from_secs(10), || async {
            let body = texts(&c, "body").await;
            body.into_iter().next().filter(|t| t.contains(&id) && t.contains("REVOKED"))
        })
        .await;
        c.close().await.expect("close the browser");
    });
    let job = stack.job(&id);
    assert_eq!(job["state"], "REVOKED", "{job}");
}

#[test]
fn slow_or_huge_requests_are_cut_off() {
    use std::io::{Read, Write};
    let stack = Stack::new();
    let web = Web::start(&stack);

    let big = "x".repeat(100 * 1024);
    let resp = web
        .http
        .post(web.url("/api/launch"))
        .header(CONTENT_TYPE, "application/json")
        .body(big)
        .send()
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Both wait out the 10 s request timeout at once: one promises a body it never sends
    // (answered 408), the other never finishes its headers (its connection is closed).
    let addr = web.base.trim_start_matches("http://").to_string();
    let open = |request: String| {
        let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        conn.write_all(request.as_bytes()).expect("write");
        conn
    };
    let began = Instant::now();
    let mut no_body = open(format!(
        "POST /api/launch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    ));
    let mut half_headers = open(format!("GET /cm/launch HTTP/1.1\r\nHost: {addr}\r\n"));
    // Meanwhile others are served. On a new connection: the pooled one carried the 413, which
    // the server closes (the rest of that body was never read), and reusing it races the close.
    let fresh = client()
        .get(web.url("/healthz"))
        .send()
        .expect("GET /healthz");
    assert_eq!(fresh.status(), StatusCode::OK);
    let mut head = [0u8; 12];
    no_body
        .read_exact(&mut head)
        .expect("a response before the read timeout");
    assert_eq!(&head, b"HTTP/1.1 408");
    let mut rest = Vec::new();
    let _ = half_headers.read_to_end(&mut rest);
    let waited = began.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "slow requests held their connections {waited:?}"
    );
    assert_nothing_published(&stack);
}

#[test]
fn revoke_from_the_api_and_the_db_stats_form_needs_json_or_the_form_token() {
    let stack = Stack::new();
    let ids = stack.launch().hosts("i[1-3]").ids();
    let app = App::new(&stack);
    let state = |id: &str| app.get_json(&format!("/api/jobs/{id}")).1["job"]["state"].clone();

    // Neither a cross-site request, nor one that is not JSON, nor a form without its token.
    let path = format!("/api/jobs/{}/revoke", ids[0]);
    let mut evil = request(
        Method::POST,
        &path,
        Some("application/json"),
        Body::from("{}"),
    );
    evil.headers_mut()
        .insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
    assert_eq!(app.send(evil).status, StatusCode::FORBIDDEN);
    let untyped = request(Method::POST, &path, None, Body::empty());
    assert_eq!(app.send(untyped).status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let form_path = format!("/cm/jobs/{}/revoke", ids[0]);
    assert_eq!(
        app.post_form(&form_path, &[("terminate", "1")]).status,
        StatusCode::FORBIDDEN
    );
    let (status, body) = app.post_json(&path, &json!({"signal": "STOP"}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "signal");
    assert_eq!(
        state(&ids[0]),
        "PENDING",
        "a refused revoke changed the job"
    );

    // A JSON body (or none, JSON-typed) revokes a queued job at once.
    let empty = request(Method::POST, &path, Some("application/json"), Body::empty());
    let reply = app.send(empty);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(
        (&answer["id"], &answer["fate"], &answer["state"]),
        (&json!(ids[0]), &json!("revoked"), &json!("REVOKED")),
        "{answer}"
    );
    let (_, job) = app.get_json(&format!("/api/jobs/{}", ids[0]));
    assert!(
        job["job"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("revoked by web@")),
        "{job}"
    );
    assert!(job["job"].get("output").is_some(), "the output tail: {job}");
    let (status, again) = app.post_json(&path, &json!({"terminate": true, "signal": "KILL"}));
    assert_eq!((status, &again["fate"]), (StatusCode::OK, &json!("final")));
    let (status, ghost) = app.post_json("/api/jobs/not-yet/revoke", &json!({}));
    assert_eq!(
        (status, &ghost["fate"]),
        (StatusCode::OK, &json!("unknown"))
    );

    // The db_stats page carries the form token its revoke buttons post.
    let page = app.get("/cm/launch/db_stats").body;
    let csrf = app.csrf();
    assert!(page.contains(&format!(r#"data-csrf="{csrf}""#)), "{page}");
    let form_path = format!("/cm/jobs/{}/revoke", ids[1]);
    let reply = app.post_form(&form_path, &[("csrf", &csrf)]);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("REVOKED now"), "{}", reply.body);
    assert_eq!(state(&ids[1]), "REVOKED");
    assert_eq!(state(&ids[2]), "PENDING");
}

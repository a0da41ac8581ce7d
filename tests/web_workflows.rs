//! The web's workflows (issue 29): the launch form's "provision these hosts first, with image"
//! (one provision per host, each host's launch WAITING after its own provision, in one store
//! transaction) and db_stats' waiting jobs with what each waits for; over HTTP through the
//! router in this process, and in a headless Chromium on a real port; real workers, broker and
//! store, SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::header::LOCATION;
use axum::http::StatusCode;
use common::browser::{click, open, screenshot, screenshot_dir, texts, wait_for, Browser};
use common::web::{App, Web};
use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

fn int(job: &Value, key: &str) -> i64 {
    job[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} of {job}"))
}

/// The stored jobs of `batch` by task ("cm.provision", "cm.launch"), each keyed by its host.
fn batch_jobs(stack: &Stack, batch: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for j in stack.jobs().into_iter().filter(|j| j["batch"] == batch) {
        let task = j["task"].as_str().unwrap_or_default().to_string();
        let host = j["hosts"]
            .as_str()
            .unwrap_or_else(|| panic!("no host in {j}"))
            .to_string();
        out.entry(task).or_default().insert(host, j);
    }
    out
}

/// The launch form with an image, then: each host's provision PENDING on the provisioner queue,
/// each host's launch WAITING with that provision as its one parent (nothing on the launcher
/// queue); db_stats (page and `/api/jobs`) lists the waiting launches with their parents; once
/// workers run, every launch starts after its own provision ended, and nothing waits.
fn provision_first_then_launch(stack: &Stack) {
    let app = App::new(stack);
    let csrf = app.csrf();
    let resp = app.post_form(
        "/cm/launch",
        &[
            ("csrf", &csrf),
            ("server", "india_openstack_essex"),
            ("recipe", "Hadoop"),
            ("kind", "vm"),
            ("hosts", "w[1-3]"),
            ("image", "ubuntu-22.04"),
        ],
    );
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.body);
    let to = resp.header(LOCATION).to_string();
    let batch = to
        .strip_prefix("/cm/launch/db_stats?batch=")
        .expect("redirect to db_stats?batch=")
        .to_string();

    // No worker yet: the provisions are queued, the launches wait in the store.
    eventually(LONG, "3 provisions queued", || {
        queue_depth(&stack.prov) == 3
    });
    assert_eq!(
        queue_depth(&stack.launch),
        0,
        "a launch was published early"
    );
    let jobs = batch_jobs(stack, &batch);
    let (provs, launches) = (&jobs["cm.provision"], &jobs["cm.launch"]);
    let hosts: Vec<&str> = launches.keys().map(String::as_str).collect();
    assert_eq!(hosts, ["w1", "w2", "w3"]);
    assert_eq!(
        provs.keys().collect::<Vec<_>>(),
        launches.keys().collect::<Vec<_>>()
    );
    for (host, launch) in launches {
        assert_eq!(launch["state"], "WAITING", "{launch}");
        let prov = &provs[host];
        assert_eq!(prov["state"], "PENDING", "{prov}");
        let show = stack.show(launch["id"].as_str().unwrap_or_default());
        let parents = show["links"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(parents.len(), 1, "{show}");
        assert_eq!(
            parents[0]["id"], prov["id"],
            "{host}'s launch waits for another host: {show}"
        );
        assert_eq!(parents[0]["mode"], "after", "{show}");
        let args: Value = serde_json::from_str(prov["args"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{prov}: {e}"));
        assert_eq!(args[0], json!([host, "ubuntu-22.04"]), "{prov}");
    }

    // db_stats shows them waiting, each with its parent and the parent's state.
    let page = app.get(&to).body;
    let card = page
        .split(r#"id="waiting""#)
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_else(|| panic!("no waiting card: {page}"));
    assert!(
        card.contains(r#"<span id="waiting-total">3</span>"#),
        "{card}"
    );
    for (host, launch) in launches {
        let (lid, pid) = (
            launch["id"].as_str().expect("a launch id"),
            provs[host]["id"].as_str().expect("a provision id"),
        );
        let row = card
            .split("<tr")
            .find(|r| r.contains(&format!(r#"data-id="{lid}""#)))
            .unwrap_or_else(|| panic!("{host}'s launch is not in the card: {card}"));
        assert!(row.contains(&format!("/cm/jobs/{pid}")), "{row}");
        assert!(row.contains("st-PENDING"), "{row}");
    }
    let (status, api) = app.get_json("/api/jobs");
    assert_eq!(status, 200);
    assert_eq!(api["waiting_total"], 3, "{api}");
    let waiting = api["waiting"].as_array().cloned().unwrap_or_default();
    assert_eq!(waiting.len(), 3, "{api}");
    for w in &waiting {
        let host = w["hosts"].as_str().unwrap_or_default();
        assert_eq!(w["id"], launches[host]["id"], "{w}");
        assert_eq!(w["parents"], 1, "{w}");
        assert_eq!(w["first"][0]["id"], provs[host]["id"], "{w}");
        assert_eq!(w["by_state"], json!([["PENDING", 1]]), "{w}");
    }

    stack.start(&[]);
    eventually(LONG, "the batch's 6 jobs SUCCESS", || {
        let all: Vec<Value> = stack
            .jobs()
            .into_iter()
            .filter(|j| j["batch"] == batch)
            .collect();
        all.len() == 6 && all.iter().all(|j| j["state"] == "SUCCESS")
    });
    let jobs = batch_jobs(stack, &batch);
    for (host, launch) in &jobs["cm.launch"] {
        let prov = &jobs["cm.provision"][host];
        assert!(
            int(prov, "finished_ms") <= int(launch, "started_ms"),
            "{host}'s launch started before its provision ended: {prov} {launch}"
        );
        assert_eq!(launch["deliveries"], 1, "{launch}");
    }
    let (_, api) = app.get_json("/api/jobs");
    assert_eq!(api["waiting"], json!([]), "{api}");
    let page = app.get("/cm/launch/db_stats").body;
    assert!(
        page.contains(r#"id="waiting" hidden"#),
        "the card shows with nothing waiting"
    );
}

#[test]
fn the_launch_form_provisions_first_and_each_launch_waits_for_its_host_on_sqlite() {
    provision_first_then_launch(&Stack::new());
}

#[test]
fn the_launch_form_provisions_first_and_each_launch_waits_for_its_host_on_postgres() {
    let db = PgDatabase::new();
    let stack = Stack::with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    });
    provision_first_then_launch(&stack);
}

/// A bad image, a bad hostlist or a missing form token: the page says which, and nothing is
/// stored or published, provisions included. The JSON twin publishes the pairs and names them.
#[test]
fn provision_first_refusals_publish_nothing_and_the_api_twin_names_both_jobs() {
    let stack = Stack::new();
    let app = App::new(&stack);
    let csrf = app.csrf();
    let form = |image: &str, hosts: &str, token: &str| {
        app.post_form(
            "/cm/launch",
            &[
                ("csrf", token),
                ("server", "india_openstack_essex"),
                ("recipe", "Hadoop"),
                ("hosts", hosts),
                ("image", image),
            ],
        )
    };
    let bad = form("two\nlines", "b[1-2]", &csrf);
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains(r#"data-field="image""#), "{}", bad.body);
    let bad = form("ubuntu", "b[1-", &csrf);
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains(r#"data-field="hosts""#), "{}", bad.body);
    let bad = form("ubuntu", "b[1-2]", "stale");
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(queue_depth(&stack.prov), 0, "a provision was published");
    assert_eq!(queue_depth(&stack.launch), 0, "a launch was published");
    assert_eq!(stack.jobs(), Vec::<Value>::new(), "jobs were stored");

    let (status, body) = app.post_json(
        "/api/launch",
        &json!({"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": "a[1-2]",
                "image": "debian"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ids = body["ids"].as_array().cloned().unwrap_or_default();
    let provs = body["provision_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!((ids.len(), provs.len()), (2, 2), "{body}");
    for (launch, prov) in ids.iter().zip(&provs) {
        let show = stack.show(launch.as_str().unwrap_or_default());
        assert_eq!(show["state"], "WAITING", "{show}");
        assert_eq!(show["links"]["parents"][0]["id"], *prov, "{show}");
    }
    eventually(LONG, "2 provisions queued", || {
        queue_depth(&stack.prov) == 2
    });
    // Without an image the twin launches at once, as before.
    let (status, body) = app.post_json(
        "/api/launch",
        &json!({"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": "n1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.get("provision_ids").is_none(), "{body}");
    assert_eq!(queue_depth(&stack.launch), 1);
}

/// In Chromium: the launch form with an image, then db_stats' waiting card lists each launch
/// with its provision, live, and empties once the workers ran them.
#[test]
fn browser_provisions_first_and_watches_the_launches_wait() {
    use fantoccini::Locator;

    let stack = Stack::with(Options {
        step_seconds: (0.1, 0.2),
        ..Options::default()
    });
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
        for (name, value) in [("hosts", "v[1-2]"), ("image", "ubuntu")] {
            form.find(Locator::Css(&format!("input[name={name}]")))
                .await
                .expect(name)
                .send_keys(value)
                .await
                .expect("type");
        }
        click(
            &c,
            Locator::XPath("//button[normalize-space(.)='press to launch']"),
        )
        .await;
        wait_for("db_stats", Duration::from_secs(20), || async {
            c.current_url()
                .await
                .ok()
                .filter(|u| u.path() == "/cm/launch/db_stats")
        })
        .await;
        let rows = wait_for("2 waiting launches", Duration::from_secs(20), || async {
            let rows = texts(&c, "#waiting-body tr").await;
            (rows.len() == 2).then_some(rows)
        })
        .await;
        for row in &rows {
            assert!(
                row.contains("launch") && row.contains("provision PENDING"),
                "{row}"
            );
        }
        screenshot(&c, &shots, "db_stats_waiting.png").await;
        c.execute("window.cmNoReload = true; return true;", vec![])
            .await
            .expect("mark page");

        stack.start(&[]);
        wait_for("the waiting card to empty", LONG, || async {
            let hidden = c
                .execute("return document.getElementById('waiting').hidden;", vec![])
                .await
                .ok()?;
            (hidden == json!(true)).then_some(())
        })
        .await;
        let still = c
            .execute("return window.cmNoReload === true;", vec![])
            .await
            .expect("check mark");
        assert_eq!(
            still,
            json!(true),
            "db_stats reloaded instead of updating itself"
        );
        c.close().await.expect("close the browser");
    });
    eventually(LONG, "4 jobs SUCCESS", || stack.all_succeeded(4));
}

//! Workflows (issue 29): jobs published `--after` others wait in the store and are released by
//! the transaction of their last parent's end, through the outbox, on SQLite and PostgreSQL;
//! real workers, the real broker, the real binary.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

/// A stack whose store is a PostgreSQL database of its own, kept alive with it.
fn pg_stack(opts: Options) -> (Stack, PgDatabase) {
    let db = PgDatabase::new();
    let stack = Stack::with(Options {
        store_url: Some(db.url.clone()),
        ..opts
    });
    (stack, db)
}

fn int(job: &Value, key: &str) -> i64 {
    job[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} of {job}"))
}

/// Waits until job `id` is in `state`, and gives its row.
fn reaches(stack: &Stack, id: &str, state: &str, within: Duration) -> Value {
    eventually_some(within, &format!("job {id} {state}"), || {
        let job = stack.job(id);
        (job["state"] == state).then_some(job)
    })
}

/// Every job ran once, and each started after its parent had finished.
fn in_order(stack: &Stack, chain: &[&str]) {
    let rows: Vec<Value> = chain.iter().map(|id| stack.job(id)).collect();
    for pair in rows.windows(2) {
        assert!(
            int(&pair[0], "finished_ms") <= int(&pair[1], "started_ms"),
            "{} started before {} ended: {:#?}",
            pair[1]["id"],
            pair[0]["id"],
            rows
        );
    }
    for r in &rows {
        assert_eq!(r["deliveries"], 1, "{r}");
    }
}

fn three_step_chain_ends_in_order(stack: &Stack) {
    // Published before any worker runs: each waits, and says for what.
    let a = stack.provision("h1").id();
    let b = stack.provision("h2").set("--after", &a).id();
    let c = stack.launch().set("--after", &b).id();
    let why = |id: &str| stack.show(id)["waits_for"].as_str().map(str::to_string);
    assert_eq!(why(&b), Some(format!("after job {a} (PENDING)")));
    assert_eq!(why(&c), Some(format!("after job {b} (WAITING)")));
    stack.start(&["p1", "p2", "l1"]);
    reaches(stack, &c, "SUCCESS", LONG);
    in_order(stack, &[&a, &b, &c]);
    let show = stack.show(&b);
    assert_eq!(show["links"]["parents"][0]["id"], a.as_str(), "{show}");
    assert_eq!(show["links"]["children"][0]["id"], c.as_str(), "{show}");
    let history = stack.history(&c);
    assert_eq!(
        history.first().map(String::as_str),
        Some("WAITING"),
        "{history:?}"
    );
    let tree: Value =
        serde_json::from_str(&stack.ok(&["jobs", "tree", &c, "--json"])).expect("tree JSON");
    assert_eq!(tree["roots"], serde_json::json!([a]), "{tree}");
    assert_eq!(tree["jobs"].as_object().map(|m| m.len()), Some(3), "{tree}");
    let text = stack.ok(&["jobs", "tree", &b]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 3 && lines[0].starts_with(&a) && lines[2].starts_with("    after "),
        "{text}"
    );
}

#[test]
fn a_three_step_chain_ends_in_order_on_sqlite() {
    three_step_chain_ends_in_order(&Stack::with(Options {
        step_seconds: (0.02, 0.02),
        ..Options::default()
    }));
}

#[test]
fn a_three_step_chain_ends_in_order_on_postgres() {
    let (stack, _db) = pg_stack(Options {
        step_seconds: (0.02, 0.02),
        ..Options::default()
    });
    three_step_chain_ends_in_order(&stack);
}

/// `cm provision --hosts 'h[1-50]'`, then one launch after all 50 ids given as one argument.
fn fan_in_of_fifty(stack: &Stack) {
    stack.start(&["p1", "p2", "l1"]);
    let parents = stack.provision("h[1-50]").stdout();
    let ids: Vec<&str> = parents.lines().collect();
    assert_eq!(ids.len(), 50);
    let child = stack.launch().set("--after", parents.trim()).id();
    let done = reaches(stack, &child, "SUCCESS", LONG);
    let last_parent = ids
        .iter()
        .map(|id| int(&stack.job(id), "finished_ms"))
        .max()
        .expect("parents");
    assert!(int(&done, "started_ms") >= last_parent, "{done}");
    assert_eq!(done["deliveries"], 1, "{done}");
    let released = stack
        .history(&child)
        .iter()
        .filter(|s| *s == "PENDING")
        .count();
    assert_eq!(released, 1, "released once: {:?}", stack.history(&child));
    assert_eq!(
        stack.show(&child)["links"]["parents"]
            .as_array()
            .map(Vec::len),
        Some(50)
    );
}

#[test]
fn a_fan_in_of_fifty_ends_in_order_on_sqlite() {
    fan_in_of_fifty(&Stack::new());
}

#[test]
fn a_fan_in_of_fifty_ends_in_order_on_postgres() {
    let (stack, _db) = pg_stack(Options::default());
    fan_in_of_fifty(&stack);
}

/// A command task that fails until the file `ok` exists in the stack's files.
const FLAKY: &str = "[tasks.\"t.flaky\"]\ncommand = [\"/bin/sh\", \"-c\", \"test -e {dir}/ok\"]\n";

fn failed_parent_revokes_and_retry_rearms(stack: &Stack) {
    stack.start(&["c1", "p1", "l1"]);
    let parent = stack.call("t.flaky").id();
    let child = stack.launch().set("--after", &parent).id();
    let grandchild = stack.provision("h9").set("--after", &child).id();
    let any = stack.provision("h8").set("--after-any", &parent).id();
    reaches(stack, &parent, "FAILURE", LONG);
    let c = reaches(stack, &child, "REVOKED", LONG);
    assert_eq!(c["error"], format!("parent {parent} ended FAILURE"), "{c}");
    let g = reaches(stack, &grandchild, "REVOKED", LONG);
    assert_eq!(g["error"], format!("parent {child} ended REVOKED"), "{g}");
    // `--after-any` runs whatever the parent's end.
    reaches(stack, &any, "SUCCESS", LONG);
    // A parent that ended already counts at once, in the publishing transaction.
    let late = stack.provision("h7").set("--after", &parent).id();
    let l = stack.job(&late);
    assert_eq!(l["state"], "REVOKED", "{l}");
    assert_eq!(l["error"], format!("parent {parent} ended FAILURE"), "{l}");
    let late_any = stack.provision("h6").set("--after-any", &parent).id();
    assert_ne!(stack.job(&late_any)["state"], "WAITING");
    reaches(stack, &late_any, "SUCCESS", LONG);
    assert_eq!(c["deliveries"], 0, "never ran: {c}");

    std::fs::write(stack.file("ok"), "").expect("write ok");
    let retry = stack.ok(&["jobs", "retry", &parent]).trim().to_string();
    assert_ne!(retry, parent);
    reaches(stack, &retry, "SUCCESS", LONG);
    reaches(stack, &grandchild, "SUCCESS", LONG);
    in_order(stack, &[&retry, &child, &grandchild]);
    // The failed run stays as it ended, linked to its retry; a second retry is refused.
    let old = stack.show(&parent);
    assert_eq!(old["state"], "FAILURE", "{old}");
    assert_eq!(old["links"]["retried_as"], retry.as_str(), "{old}");
    assert!(stack.history(&parent).contains(&"RETRIED".to_string()));
    assert!(stack.history(&child).contains(&"WAITING".to_string()));
    let refused = stack.fails(&["jobs", "retry", &parent], 65);
    assert!(refused.contains("retried already"), "{refused}");
    let refused = stack.fails(&["jobs", "retry", &retry], 65);
    assert!(refused.contains("ended SUCCESS"), "{refused}");
    assert_eq!(stack.job(&any)["deliveries"], 1);
}

fn flaky_options() -> Options {
    Options {
        own_queue: Some(OwnQueue::commands(FLAKY)),
        ..Options::default()
    }
}

#[test]
fn a_failed_parent_revokes_its_children_and_retry_rearms_them_on_sqlite() {
    failed_parent_revokes_and_retry_rearms(&Stack::with(flaky_options()));
}

#[test]
fn a_failed_parent_revokes_its_children_and_retry_rearms_them_on_postgres() {
    let (stack, _db) = pg_stack(flaky_options());
    failed_parent_revokes_and_retry_rearms(&stack);
}

/// Worker p1 commits the parent's end (which releases the child into the outbox) and dies
/// before publishing it: with the hook `off` it never claims the row, with `stall` it claims it
/// and its claim must lapse. Killed -9; p2, started after, publishes the child once.
fn killed_between_commit_and_publish(stack: &Stack, hook: &str) {
    // Both published before any worker runs: the child waits (its parent is not final yet).
    let parent = stack.provision("h1").id();
    let child = stack.provision("h2").set("--after", &parent).id();
    assert_eq!(stack.job(&child)["state"], "WAITING");
    let ran = stack.cm_via(
        &["env", &format!("CM_TEST_OUTBOX={hook}")],
        &["queue", "start", "p1"],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    reaches(stack, &parent, "SUCCESS", LONG);
    // Released, and not published: it stays PENDING in the store, never received.
    std::thread::sleep(Duration::from_millis(1500));
    let held = stack.job(&child);
    assert_eq!(held["state"], "PENDING", "{held}");
    assert_eq!(held["deliveries"], 0, "{held}");
    stack.kill9("p1");
    stack.start(&["p2"]);
    let done = reaches(stack, &child, "SUCCESS", LONG);
    assert_eq!(done["deliveries"], 1, "published once: {done}");
    assert_eq!(
        done["worker"].as_str().map(|w| w.starts_with("p2@")),
        Some(true),
        "{done}"
    );
    let received = stack
        .history(&child)
        .iter()
        .filter(|s| *s == "RECEIVED")
        .count();
    assert_eq!(received, 1, "{:?}", stack.history(&child));

    // A second publish of the released job (its publisher died between the publish and the
    // outbox row's delete) is acked unrun.
    let mut copy = cm::celery::message::TaskMessage::new(
        "cm.provision",
        vec!["h2".into(), "ubuntu".into()],
        serde_json::Map::new(),
    );
    copy.id.clone_from(&child);
    let (body, props) = copy.encode("test");
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        cm::client::outbox::RELEASED_HEADER.into(),
        lapin::types::AMQPValue::Boolean(true),
    );
    publish_to(&stack.prov, &body, props.with_headers(headers));
    eventually(LONG, "the copy noted REDELIVERED", || {
        stack.history(&child).iter().any(|s| s == "REDELIVERED")
    });
    let received = stack
        .history(&child)
        .iter()
        .filter(|s| *s == "RECEIVED")
        .count();
    assert_eq!(received, 1, "not run again: {:?}", stack.history(&child));
}

#[test]
fn a_worker_killed_after_the_commit_before_the_publish_leaves_the_child_to_the_next_on_sqlite() {
    killed_between_commit_and_publish(&Stack::new(), "off");
}

#[test]
fn a_worker_killed_holding_an_outbox_claim_leaves_the_child_to_the_next_on_postgres() {
    let (stack, _db) = pg_stack(Options {
        worker_keys: "lease_seconds = 3".into(),
        ..Options::default()
    });
    killed_between_commit_and_publish(&stack, "stall");
}

/// Two hosts share one PostgreSQL store: host A runs the provisioner queue, host B the
/// launcher. Each step's child runs on the other host, released by this host's commit; a fan-in
/// whose parents end on both hosts at once is released once.
#[test]
fn two_hosts_sharing_postgres_release_each_others_children() {
    let (a, _db) = pg_stack(Options {
        node_host: Some("host-a".into()),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    a.start(&["p1"]);
    b.start(&["l1", "p2"]);
    let s1 = a.provision("h1").id();
    let s2 = a.launch().set("--after", &s1).id();
    let s3 = b.provision("h2").set("--after", &s2).id();
    let s4 = b.launch().set("--after", &s3).id();
    reaches(&a, &s4, "SUCCESS", LONG);
    in_order(&a, &[&s1, &s2, &s3, &s4]);
    for (id, host) in [(&s1, "host-a"), (&s2, "host-b"), (&s4, "host-b")] {
        let w = a.job(id)["worker"].as_str().unwrap_or("").to_string();
        assert!(w.ends_with(host), "job {id} ran on {w}, not {host}");
    }
    // Parents on both hosts (p1 on A, p2 on B), ending side by side.
    let parents = a.provision("f[1-40]").stdout();
    let child = b.launch().set("--after", parents.trim()).id();
    let done = reaches(&a, &child, "SUCCESS", LONG);
    assert_eq!(done["deliveries"], 1, "{done}");
    let hosts: std::collections::BTreeSet<String> = parents
        .lines()
        .map(|id| a.job(id)["worker"].as_str().unwrap_or("").to_string())
        .map(|w| w.rsplit('@').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(hosts.len(), 2, "parents ran on both hosts: {hosts:?}");
    let released = a.history(&child).iter().filter(|s| *s == "PENDING").count();
    assert_eq!(released, 1, "{:?}", a.history(&child));
}

fn refusals(stack: &Stack) {
    let real = stack.provision("h1").id();
    let before = stack.jobs().len();
    let err = stack.launch().set("--after", "no-such-job").fails(65);
    assert!(err.contains("unknown parent job no-such-job"), "{err}");
    let err = stack
        .call("cm.provision")
        .args("[\"h2\", \"img\"]")
        .set("--id", "loop-1")
        .set("--after", format!("{real} loop-1"))
        .fails(65);
    assert!(err.contains("cycle"), "{err}");
    let err = stack
        .call("cm.provision")
        .args("[\"h2\", \"img\"]")
        .set("--id", &real)
        .set("--after", &real)
        .fails(65);
    assert!(
        err.contains("cycle") || err.contains("in the store already"),
        "{err}"
    );
    stack.edit_config(|t| format!("{t}\n[workflows]\nmax_parents = 2\n"));
    let three = stack.provision("m[1-3]").stdout();
    let err = stack.launch().set("--after", three.trim()).fails(65);
    assert!(err.contains("max_parents"), "{err}");
    assert_eq!(
        stack.jobs().len(),
        before + 3,
        "only the provisions were stored"
    );
    assert_eq!(
        stack
            .jobs()
            .iter()
            .filter(|j| j["state"] == "WAITING")
            .count(),
        0
    );
}

#[test]
fn an_unknown_parent_a_cycle_and_too_many_parents_are_refused_with_65_on_sqlite() {
    refusals(&Stack::new());
}

#[test]
fn an_unknown_parent_a_cycle_and_too_many_parents_are_refused_with_65_on_postgres() {
    let (stack, _db) = pg_stack(Options::default());
    refusals(&stack);
}

/// The web: the job page shows a job's parents and children and offers a retry of a failed
/// one; `POST /api/jobs/ID/retry` and `GET /api/jobs/ID/tree` are the twins.
#[test]
fn the_web_retries_a_failed_parent_and_shows_the_workflow() {
    let stack = Stack::with(flaky_options());
    stack.start(&["c1", "l1"]);
    let parent = stack.call("t.flaky").id();
    let child = stack.launch().set("--after", &parent).id();
    let other = stack.call("t.flaky").id();
    reaches(&stack, &child, "REVOKED", LONG);
    reaches(&stack, &other, "FAILURE", LONG);
    let app = common::web::App::new(&stack);
    let (status, tree) = app.get_json(&format!("/api/jobs/{child}/tree"));
    assert_eq!(status, 200, "{tree}");
    assert_eq!(tree["roots"], serde_json::json!([parent]), "{tree}");
    assert_eq!(tree["jobs"][&child]["state"], "REVOKED", "{tree}");
    assert_eq!(tree["edges"][0]["mode"], "after", "{tree}");
    let page = app.get(&format!("/cm/jobs/{parent}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("retry-form"), "{}", page.body);
    assert!(
        page.body.contains(&format!("/cm/jobs/{child}")),
        "{}",
        page.body
    );
    let page = app.get(&format!("/cm/jobs/{child}"));
    assert!(
        page.body.contains(&format!("/cm/jobs/{parent}")),
        "{}",
        page.body
    );

    std::fs::write(stack.file("ok"), "").expect("write ok");
    // From the page, with its form token.
    let csrf = app.csrf();
    let done = app.post_form(&format!("/cm/jobs/{parent}/retry"), &[("csrf", &csrf)]);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("runs again as job"), "{}", done.body);
    reaches(&stack, &child, "SUCCESS", LONG);
    let (_, job) = app.get_json(&format!("/api/jobs/{child}"));
    let retry = job["links"]["parents"][0]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_ne!(retry, parent, "{job}");
    let (_, tree) = app.get_json(&format!("/api/jobs/{child}/tree"));
    assert_eq!(tree["roots"], serde_json::json!([retry]), "{tree}");
    let page = app.get(&format!("/cm/jobs/{parent}"));
    assert!(
        !page.body.contains("retry-form"),
        "retried already: {}",
        page.body
    );
    // The twin.
    let (status, again) =
        app.post_json(&format!("/api/jobs/{parent}/retry"), &serde_json::json!({}));
    assert_eq!(status, 409, "{again}");
    let (status, body) = app.post_json(&format!("/api/jobs/{other}/retry"), &serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    let second = body["retry"].as_str().expect("the retry's id").to_string();
    reaches(&stack, &second, "SUCCESS", LONG);
    let (status, _) = app.post_json("/api/jobs/no-such-job/retry", &serde_json::json!({}));
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/jobs/no-such-job/tree");
    assert_eq!(status, 404);
}

//! The store tells the truth: a job its worker gives back is recorded so, and a revoke answers
//! from that; a waited call leaves no returned-message noise in the worker's log; each job has
//! a page. Real workers, broker, store and commands; the page over real HTTP and in Chromium.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::browser::{click, open, screenshot, screenshot_dir, texts, wait_for, Browser};
use common::web::{App, Web};
use common::*;

/// A command that sleeps the first time it runs and succeeds the second (a marker file).
const TWICE: &str = r#"[tasks."t.twice"]
command = ["/bin/sh", "-c", "echo $$ >> {dir}/runs; if [ -e {dir}/second ]; then exit 0; fi; touch {dir}/second; exec sleep 60"]
"#;

/// Worker `c1` with a stop grace of 4 s (its jobs get 2 s of it), taking `t.twice`.
fn twice_stack() -> Stack {
    Stack::with(Options {
        grace_seconds: 4.0,
        own_queue: Some(OwnQueue::commands(TWICE)),
        ..Options::default()
    })
}

/// How many times `t.twice` ran.
fn runs(stack: &Stack) -> usize {
    std::fs::read_to_string(stack.file("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Starts `c1`, calls `t.twice`, waits for its first run, then stops `c1` under it: the job id.
fn given_back_by_a_stop(stack: &Stack) -> String {
    stack.start(&["c1"]);
    let id = stack.call("t.twice").id();
    eventually(Duration::from_secs(20), "the first run", || {
        runs(stack) == 1
    });
    eventually(Duration::from_secs(10), "the job to be STARTED", || {
        stack.job(&id)["state"] == "STARTED"
    });
    stack.stop(&["c1"]);
    id
}

/// `cm jobs show ID` of a job `c1` gave back: PENDING, and its last history line says by whom
/// and why.
fn assert_shown_given_back(stack: &Stack, id: &str) {
    let shown = stack.ok(&["jobs", "show", id]);
    assert!(shown.contains("state PENDING"), "{shown}");
    let last = shown.lines().last().unwrap_or_default();
    assert!(
        last.contains("REQUEUED")
            && last.contains("given back by c1@")
            && last.contains("the worker stopped")
            && last.contains("its message went back to the queue"),
        "{shown}"
    );
    assert_eq!(queue_depth(stack.queue()), 1, "its message is back");
}

#[test]
fn a_job_stopped_mid_run_is_recorded_given_back_then_runs_to_success() {
    let stack = twice_stack();
    let id = given_back_by_a_stop(&stack);
    assert_shown_given_back(&stack, &id);

    stack.start(&["c1"]);
    eventually(Duration::from_secs(30), "the second run to succeed", || {
        stack.job(&id)["state"] == "SUCCESS"
    });
    assert_eq!(runs(&stack), 2);
    assert_eq!(
        stack.history(&id),
        ["PENDING", "RECEIVED", "STARTED", "REQUEUED", "RECEIVED", "STARTED", "SUCCESS"]
    );
    let answer = stack.ok(&["jobs", "revoke", &id]);
    assert_eq!(answer.trim(), format!("{id}: already SUCCESS; unchanged"));
    stack.server_stop();
}

/// Revoked while given back, the job is REVOKED at once (nothing runs it: no "left to finish"),
/// and its message, delivered again, is acked unrun.
#[test]
fn a_job_given_back_then_revoked_is_revoked_at_once_and_acked_unrun() {
    let stack = twice_stack();
    let id = given_back_by_a_stop(&stack);
    assert_shown_given_back(&stack, &id);

    let answer = stack.ok(&["jobs", "revoke", &id]);
    assert_eq!(
        answer.trim(),
        format!("{id}: REVOKED now (was PENDING, not yet running)")
    );
    stack.start(&["c1"]);
    eventually(
        Duration::from_secs(30),
        "the redelivery to be acked",
        || stack.history(&id).last().map(String::as_str) == Some("REDELIVERED"),
    );
    assert_eq!(stack.job(&id)["state"], "REVOKED");
    assert_eq!(runs(&stack), 1, "a revoked job ran again");
    eventually(Duration::from_secs(10), "the queue to be empty", || {
        queue_depth(stack.queue()) == 0
    });
    let log = stack.log("c1");
    assert!(
        log.contains(&format!(
            "{id} t.twice: already REVOKED; acked without running again"
        )),
        "{log}"
    );
    stack.server_stop();
}

/// What lapin printed for each message the broker returned: the body as decimal bytes.
fn returned_noise(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("NO_ROUTE")
                || l.contains("returned us a message")
                || l.contains("[123, 34")
                || l.contains("sending the result of job")
        })
        .collect()
}

/// `--wait` reads the end from the store and may leave before its reply reaches it: that
/// reply is returned NO_ROUTE, which is expected and leaves no line in the worker's log.
#[test]
fn waited_calls_and_launches_leave_no_returned_reply_in_the_worker_log() {
    let stack = Stack::with(Options {
        own_queue: Some(OwnQueue::commands(
            r#"[tasks."t.quick"]
command = ["/bin/true"]
"#,
        )),
        ..Options::default()
    });
    stack.start(&["c1", "l1"]);
    for _ in 0..10 {
        stack.call("t.quick").timeout(30.0).id();
    }
    let launched = stack.launch().hosts("w[1-5]").count(4).timeout(60.0).ids();
    assert_eq!(launched.len(), 20);
    let mut replies = 0;
    for worker in ["c1", "l1"] {
        let log = stack.log(worker);
        assert_eq!(returned_noise(&log), Vec::<&str>::new(), "{worker}: {log}");
        replies += log.matches("SUCCESS").count();
    }
    assert!(replies >= 30, "every job ran and was waited for");
    stack.server_stop();
}

/// `/cm/jobs/ID` over real HTTP: a finished job's fields, result and history, by its id or the
/// short id db_stats shows, 404 for none and 409 for a part several ids share; `/api/jobs/ID`
/// answers alike. A queued job's page has the revoke buttons, with the session's form token.
#[test]
fn each_job_has_a_page_with_its_history_and_revoke_while_not_final() {
    let stack = Stack::new();
    stack.start(&["p1"]);
    let done = stack.provision("page1").timeout(30.0).id();
    stack.stop(&["p1"]);
    let queued = stack.provision("page[2-3]").ids();
    let web = Web::start(&stack);

    let short = &done[done.len() - 8..];
    for name in [done.as_str(), short] {
        let resp = web.get(&format!("/cm/jobs/{name}"));
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let page = resp.text().expect("page");
        assert!(
            page.contains(&format!(r#"<code id="job-id">{done}</code>"#)),
            "{page}"
        );
        assert!(page.contains(r#"class="st st-SUCCESS">SUCCESS"#), "{page}");
        for state in ["PENDING", "RECEIVED", "STARTED", "INITIATING", "AVAILABLE"] {
            assert!(
                page.contains(&format!(">{state}</span></td><td>")),
                "{state}: {page}"
            );
        }
        assert!(page.contains("p1@"), "the worker: {page}");
        assert!(page.contains("page1"), "its host: {page}");
        assert!(
            !page.contains("revoke-form"),
            "a final job offers no revoke: {page}"
        );
        let (status, api) = web.get_json(&format!("/api/jobs/{name}"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(api["job"]["id"], done.as_str());
        assert_eq!(api["history"].as_array().map(Vec::len), Some(8), "{api}");
    }
    let nothing = web.get("/cm/jobs/no-such-job");
    assert_eq!(nothing.status(), StatusCode::NOT_FOUND);
    let nothing = nothing.text().expect("page");
    assert!(
        nothing.contains("no job ") && nothing.contains("no-such-job"),
        "{nothing}"
    );
    assert_eq!(
        web.get_json("/api/jobs/no-such-job").0,
        StatusCode::NOT_FOUND
    );
    // UUIDv7s made within a minute share their first 8 characters.
    let shared = &queued[0][..8];
    assert_eq!(&queued[1][..8], shared, "{queued:?}");
    let several = web.get(&format!("/cm/jobs/{shared}"));
    assert_eq!(several.status(), StatusCode::CONFLICT);
    assert!(several
        .text()
        .expect("page")
        .contains("more than one job id"));
    assert_eq!(
        web.get_json(&format!("/api/jobs/{shared}")).0,
        StatusCode::CONFLICT
    );

    // db_stats links each id to its page.
    let stats = web.get("/cm/launch/db_stats").text().expect("page");
    assert!(
        stats.contains(&format!(r#"<a href="/cm/jobs/{done}">{short}</a>"#)),
        "{stats}"
    );

    // The queued job's page revokes it, with the session's form token.
    let app = App::new(&stack);
    let page = app.get(&format!("/cm/jobs/{}", queued[0]));
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("revoke-form"), "{}", page.body);
    let csrf = common::web::csrf_of(&page.body);
    let path = format!("/cm/jobs/{}/revoke", queued[0]);
    let revoked = app.post_form(&path, &[("csrf", &csrf)]);
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(revoked.body.contains("REVOKED now"), "{}", revoked.body);
    let page = app.get(&format!("/cm/jobs/{}", queued[0])).body;
    assert!(page.contains(r#"class="st st-REVOKED">REVOKED"#), "{page}");
    assert!(!page.contains("revoke-form"), "{page}");
}

/// In Chromium: the id in db_stats opens the job's page, with its history; a queued job's page
/// revokes it. (`CM_SCREENSHOTS=docs/screenshots` saves the page as job.png.)
#[test]
fn browser_opens_a_job_page_from_db_stats_and_revokes_it_there() {
    use fantoccini::Locator;

    let stack = Stack::with(Options {
        step_seconds: (0.05, 0.1),
        ..Options::default()
    });
    stack.start(&["p1"]);
    let done = stack.provision("b1").timeout(30.0).id();
    stack.stop(&["p1"]);
    // No worker runs now: this one stays PENDING until revoked.
    let queued = stack.provision("b2").id();
    let web = Web::start(&stack);
    let browser = Browser::start(stack.dir.path());
    let shots = screenshot_dir(stack.dir.path());
    let base = web.base.clone();
    let short = done[done.len() - 8..].to_string();

    common::runtime().block_on(async {
        let c = browser.session().await;
        open(&c, &format!("{base}/cm/launch/db_stats")).await;
        wait_for("the jobs' rows", Duration::from_secs(10), || async {
            let rows = texts(&c, "#jobs-body tr.job").await;
            (rows.len() == 2).then_some(())
        })
        .await;
        click(&c, Locator::LinkText(&short)).await;
        wait_for("the job's page", Duration::from_secs(10), || async {
            let history = texts(&c, "#job-history tbody tr").await;
            (history.len() == 8 && history[7].contains("SUCCESS")).then_some(())
        })
        .await;
        let url = c.current_url().await.expect("url");
        assert_eq!(url.path(), format!("/cm/jobs/{done}"));
        assert!(
            c.find(Locator::Id("revoke-form")).await.is_err(),
            "final: no revoke"
        );
        screenshot(&c, &shots, "job.png").await;

        open(
            &c,
            &format!("{base}/cm/jobs/{}", &queued[queued.len() - 8..]),
        )
        .await;
        click(
            &c,
            Locator::XPath("//form[@id='revoke-form']//button[normalize-space(.)='revoke']"),
        )
        .await;
        wait_for("the revoke's answer", Duration::from_secs(10), || async {
            let body = texts(&c, "body").await;
            body.into_iter()
                .next()
                .filter(|t| t.contains(&queued) && t.contains("REVOKED now"))
        })
        .await;
        c.close().await.expect("close the browser");
    });
    assert_eq!(stack.job(&queued)["state"], "REVOKED");
    assert_eq!(stack.job(&done)["state"], "SUCCESS");
}

//! Schedules (`[schedules.NAME]`) and retention (`[retention]`) with real workers, broker and
//! store: every slot fires once across two hosts whose workers are killed -9; catch_up after
//! every worker was down; overlap with a task longer than the period; pause across a restart
//! and a run now; finished jobs pruned with the counts exact, on SQLite and PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::Duration;

use common::web;
use common::*;
use serde_json::Value;

/// A schedule table firing `cm.provision` every second.
fn every_second(name: &str, keys: &str) -> String {
    format!(
        "[schedules.{name}]\ntask = \"cm.provision\"\nargs = [\"h1\", \"img\"]\nevery = \"1s\"\n{keys}\n"
    )
}

/// `cm schedules history NAME --json --limit 0`: its firings, newest first.
fn firings(stack: &Stack, name: &str) -> Vec<Value> {
    let out = stack.ok(&["schedules", "history", name, "--json", "--limit", "0"]);
    serde_json::from_str(&out).expect("history JSON")
}

/// `cm schedules --json`, the schedule `name`.
fn schedule(stack: &Stack, name: &str) -> Value {
    let all: Vec<Value> =
        serde_json::from_str(&stack.ok(&["schedules", "--json"])).expect("schedules JSON");
    all.into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or(Value::Null)
}

fn slot(f: &Value) -> i64 {
    f["slot_ms"].as_i64().expect("slot_ms")
}

fn now_ms() -> i64 {
    (now_s() * 1000.0) as i64
}

/// The p-th percentile of `values` (sorted here).
fn percentile(values: &mut [i64], p: usize) -> i64 {
    values.sort_unstable();
    values
        .get((values.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or(0)
}

#[test]
fn every_slot_fires_once_on_two_hosts_whose_workers_are_killed_on_postgres() {
    let db = PgDatabase::new();
    every_slot_fires_once_on_two_hosts(&db.url, "PostgreSQL");
}

#[test]
fn every_slot_fires_once_on_two_hosts_whose_workers_are_killed_on_sqlite() {
    // Two "hosts" of this machine sharing one SQLite file.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    every_slot_fires_once_on_two_hosts(&url, "SQLite");
}

/// `every = "1s"` over about 30 s on two hosts (own configs, pid dirs and node names) sharing the
/// store at `url`, a worker of one or the other killed -9 and restarted six times: every slot
/// in the window fired exactly once, each firing with its own job, every job run.
fn every_slot_fires_once_on_two_hosts(url: &str, backend: &str) {
    let a = Stack::with(Options {
        store_url: Some(url.to_string()),
        node_host: Some("host-a".into()),
        // The lease reaper and the firer's publish claim both come back within seconds.
        worker_keys: "lease_seconds = 3".into(),
        extra: every_second("beat", "catch_up = \"all\"\noverlap = \"allow\""),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    a.start(&["p1", "p2"]);
    b.start(&["p1", "p2"]);
    let started = now_ms();
    // Six kills over about 24 s, alternating hosts and workers; each restarted at once, so at
    // least one worker of the four ticks at any time.
    for (i, (host, worker)) in [
        (&a, "p1"),
        (&b, "p2"),
        (&a, "p2"),
        (&b, "p1"),
        (&a, "p1"),
        (&b, "p2"),
    ]
    .into_iter()
    .enumerate()
    {
        sleep(Duration::from_millis(3_000 + 250 * i as u64));
        host.kill9(worker);
        host.start(&[worker]);
    }
    sleep(Duration::from_secs(3));
    let stopped = now_ms();
    a.stop(&[]);
    b.stop(&[]);
    let fired = firings(&a, "beat");
    let slots: Vec<i64> = fired.iter().map(slot).collect();
    let distinct: BTreeSet<i64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    let (first, last) = (
        *distinct.first().expect("no firing"),
        *distinct.last().expect("no firing"),
    );
    // None missing: every second from the first slot after the workers started to the last
    // before they stopped.
    assert!(
        first <= started + 2_000,
        "first slot {first}, started {started}"
    );
    assert!(
        last >= stopped - 2_000,
        "last slot {last}, stopped {stopped}"
    );
    let expected: BTreeSet<i64> = (first / 1000..=last / 1000).map(|s| s * 1000).collect();
    let missing: Vec<_> = expected.difference(&distinct).collect();
    assert!(missing.is_empty(), "slots never fired: {missing:?}");
    assert!(
        distinct.len() >= 20,
        "only {} slots in the window",
        distinct.len()
    );

    // Count jobs per slot: each firing has its own job and no job is without a firing.
    let by_job: BTreeMap<String, i64> = fired
        .iter()
        .map(|f| (f["job_id"].as_str().expect("a job").to_string(), slot(f)))
        .collect();
    assert_eq!(by_job.len(), slots.len(), "one job per slot");
    // Every job ran: the firings a killed firer did not publish were published by a sweep.
    a.start(&["p1"]);
    eventually(
        Duration::from_secs(30),
        "every fired job to succeed",
        || {
            let jobs = a.jobs();
            let provisions: Vec<&Value> = jobs
                .iter()
                .filter(|j| j["task"] == "cm.provision")
                .collect();
            provisions.len() >= by_job.len() && provisions.iter().all(|j| j["state"] == "SUCCESS")
        },
    );
    let jobs = a.jobs();
    let ids: BTreeSet<String> = jobs
        .iter()
        .filter(|j| j["task"] == "cm.provision")
        .filter_map(|j| j["id"].as_str().map(String::from))
        .collect();
    let fired_ids: BTreeSet<String> = by_job.keys().cloned().collect();
    assert!(
        fired_ids.is_subset(&ids),
        "a fired job is missing from the store"
    );
    let window_jobs = jobs
        .iter()
        .filter(|j| j["task"] == "cm.provision")
        .filter(|j| fired_ids.contains(j["id"].as_str().unwrap_or("")))
        .count();
    assert_eq!(
        window_jobs,
        expected.len(),
        "jobs per slot: exactly one each"
    );
    let mut lag: Vec<i64> = fired
        .iter()
        .map(|f| f["fired_ms"].as_i64().unwrap_or(0) - slot(f))
        .collect();
    let (p50, p99) = (percentile(&mut lag, 50), percentile(&mut lag, 99));
    let slot_of = |id: &str| by_job.get(id).copied();
    let mut start_lag: Vec<i64> = jobs
        .iter()
        .filter_map(|j| Some(j["started_ms"].as_i64()? - slot_of(j["id"].as_str()?)?))
        .collect();
    let (s50, s99) = (
        percentile(&mut start_lag, 50),
        percentile(&mut start_lag, 99),
    );
    eprintln!(
        "{backend}, two hosts, 6 kills: {} slots; slot to firing p50 {p50} ms, p99 {p99} ms; \
         slot to job start p50 {s50} ms, p99 {s99} ms",
        lag.len()
    );
    assert!(p50 < 100, "firing lag p50 {p50} ms");
}

#[test]
fn catch_up_skip_once_and_all_after_every_worker_was_down() {
    let extra = [
        every_second("skip", "catch_up = \"skip\"\noverlap = \"allow\""),
        every_second("once", "catch_up = \"once\"\noverlap = \"allow\""),
        every_second("all", "catch_up = \"all\"\noverlap = \"allow\""),
    ]
    .concat();
    let stack = Stack::with(Options {
        extra,
        ..Options::default()
    });
    stack.start(&["p1"]);
    sleep(Duration::from_secs(3));
    stack.kill9("p1");
    let down = now_ms();
    sleep(Duration::from_secs(10));
    let up = now_ms();
    stack.start(&["p1"]);
    sleep(Duration::from_secs(3));
    stack.stop(&[]);

    // L: the newest slot fired before the kill; F: the first fired on time after it.
    let split = |name: &str| {
        let fired = firings(&stack, name);
        let before = fired
            .iter()
            .map(slot)
            .filter(|s| *s <= down)
            .max()
            .expect("fired before");
        let after = fired
            .iter()
            .filter(|f| f["how"] == "on_time" && slot(f) > before)
            .map(slot)
            .min()
            .expect("fired after the restart");
        // The slot just before the restart may be on time too, within the grace.
        assert!(
            after >= up - 1_000,
            "{name}: on time at {after}, restarted at {up}"
        );
        let between: Vec<Value> = fired
            .iter()
            .filter(|f| slot(f) > before && slot(f) < after)
            .cloned()
            .collect();
        (before, after, between)
    };
    let (l, f, between) = split("skip");
    assert!(f - l >= 9_000, "skip: {l}..{f}");
    assert!(between.is_empty(), "skip fired missed slots: {between:?}");
    assert!(schedule(&stack, "skip")["missed"].as_i64().unwrap_or(0) >= 8);

    let (l, f, between) = split("once");
    assert!(f - l >= 9_000, "once: {l}..{f}");
    assert_eq!(
        between.len(),
        1,
        "once: one run for the missed slots: {between:?}"
    );
    assert_eq!(between[0]["how"], "catch_up");
    assert!(between[0]["job_id"].is_string());

    let (l, f, between) = split("all");
    let slots: BTreeSet<i64> = between.iter().map(slot).collect();
    let expected: BTreeSet<i64> = (l / 1000 + 1..f / 1000).map(|s| s * 1000).collect();
    assert_eq!(slots, expected, "all: every missed slot");
    assert!(between.iter().all(|b| b["how"] == "catch_up"));
    assert!(between.len() >= 9);
    assert_eq!(schedule(&stack, "all")["missed"], 0);
}

#[test]
fn overlap_skip_starts_no_job_while_the_last_one_runs() {
    let tasks = "[tasks.\"t.sleep\"]\ncommand = [\"sleep\", \"2.5\"]";
    let stack = Stack::with(Options {
        own_queue: Some(OwnQueue::commands(tasks)),
        extra: "[schedules.slow]\ntask = \"t.sleep\"\nevery = \"1s\"\noverlap = \"skip\"\n".into(),
        ..Options::default()
    });
    stack.start(&["c1"]);
    sleep(Duration::from_secs(9));
    stack.stop(&[]);
    let fired = firings(&stack, "slow");
    let overlapped = fired.iter().filter(|f| f["how"] == "overlapped").count();
    assert!(overlapped >= 4, "{fired:?}");
    assert!(fired
        .iter()
        .filter(|f| f["how"] == "overlapped")
        .all(|f| f["job_id"].is_null()));
    // The jobs never ran at the same time, though c1 runs two at once.
    let mut runs: Vec<(i64, i64)> = stack
        .jobs()
        .iter()
        .filter(|j| j["task"] == "t.sleep")
        .filter_map(|j| Some((j["started_ms"].as_i64()?, j["finished_ms"].as_i64()?)))
        .collect();
    runs.sort_unstable();
    assert!(runs.len() >= 2, "{runs:?}");
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two runs overlapped: {runs:?}");
    }
}

#[test]
fn a_pause_holds_across_a_restart_and_a_run_fires_now() {
    let stack = Stack::with(Options {
        extra: every_second("beat", ""),
        ..Options::default()
    });
    stack.start(&["p1", "p2"]);
    eventually(Duration::from_secs(10), "a first firing", || {
        !firings(&stack, "beat").is_empty()
    });
    let said = stack.ok(&["schedules", "pause", "beat"]);
    assert!(said.contains("paused"), "{said}");
    let paused_at = now_ms();
    stack.ok(&["queue", "restart"]);
    sleep(Duration::from_secs(3));
    let fired = firings(&stack, "beat");
    assert!(
        fired.iter().all(|f| slot(f) <= paused_at + 1_000),
        "fired while paused: {fired:?}"
    );
    let listed = schedule(&stack, "beat");
    assert_eq!(listed["paused"], true);
    assert!(listed["next_slot_ms"].is_null());
    let text = stack.ok(&["schedules"]);
    assert!(text.contains("beat") && text.contains("every 1s"), "{text}");

    // A run now fires while paused; a running worker publishes it.
    let said = stack.ok(&["schedules", "run", "beat"]);
    let id = said.lines().next().unwrap_or("").trim().to_string();
    assert!(said.contains("a running worker publishes it"), "{said}");
    eventually(Duration::from_secs(10), "the manual run to succeed", || {
        stack.job(&id)["state"] == "SUCCESS"
    });
    assert_eq!(firings(&stack, "beat")[0]["how"], "manual");

    stack.ok(&["schedules", "resume", "beat"]);
    let resumed = now_ms();
    eventually(Duration::from_secs(10), "firings again", || {
        firings(&stack, "beat")
            .iter()
            .any(|f| f["how"] == "on_time" && slot(f) > resumed)
    });
    // The slots slept through never fire.
    let fired = firings(&stack, "beat");
    assert!(!fired
        .iter()
        .any(|f| f["how"] != "manual" && slot(f) > paused_at + 1_000 && slot(f) < resumed - 1_000));

    let err = stack.fails(&["schedules", "pause", "nope"], 64);
    assert!(
        err.contains("no schedule \"nope\"") && err.contains("beat"),
        "{err}"
    );
    let err = stack.fails(&["schedules", "run", "nope"], 64);
    assert!(err.contains("no schedule"), "{err}");
}

#[test]
fn a_schedule_with_a_bad_expression_zone_or_task_is_a_config_error() {
    for (table, says) in [
        ("cron = \"99 * * * *\"", "schedules.s.cron"),
        (
            "every = \"1m\"\ntimezone = \"Europe/Nowhere\"",
            "unknown time zone",
        ),
    ] {
        let stack = Stack::with(Options {
            extra: format!("[schedules.s]\ntask = \"cm.provision\"\n{table}\n"),
            ..Options::default()
        });
        let err = stack.fails(&["schedules"], 78);
        assert!(err.contains(says) && err.contains("fabfile.toml:"), "{err}");
    }
    let stack = Stack::with(Options {
        extra: "[schedules.s]\ntask = \"ops.backup\"\nevery = \"1m\"\n".into(),
        ..Options::default()
    });
    let err = stack.fails(&["queue", "start"], 78);
    assert!(err.contains("no queue lists \"ops.backup\""), "{err}");
}

/// The kept counts (what `cm jobs` and the web read) against the rows counted.
fn counts_exact(stack: &Stack, url: &str) -> usize {
    let location = cm::config::StoreLocation::parse(url, stack.dir.path()).expect("store url");
    runtime().block_on(async {
        let store = cm::store::Store::open(&location).await.expect("store");
        let filter = cm::store::JobFilter {
            limit: 0,
            ..Default::default()
        };
        let rows = store.list(&filter).await.expect("list");
        let kept = store
            .count(&cm::store::JobFilter::default())
            .await
            .expect("count");
        assert_eq!(kept, rows.len() as i64, "kept count against rows");
        rows.len()
    })
}

fn retention_prunes_and_counts_stay_exact(db: Option<&PgDatabase>) {
    let stack = Stack::with(Options {
        store_url: db.map(|d| d.url.clone()),
        extra:
            "[retention]\nsucceeded = \"1s\"\nfailed = \"1s\"\nkeep_last = 2\ninterval = \"1s\"\n"
                .into(),
        ..Options::default()
    });
    let url = db.map_or_else(
        || format!("sqlite://{}", stack.store_file().display()),
        |d| d.url.clone(),
    );
    stack.start(&["p1"]);
    stack.provision("h[1-6]").timeout(30.0).ids();
    stack.stop(&[]);
    sleep(Duration::from_millis(1_500));
    // Six finished over a second ago: the newest two stay.
    let said = stack.ok(&["jobs", "prune", "--dry-run"]);
    assert!(
        said.starts_with("4 finished job(s) would be deleted"),
        "{said}"
    );
    assert_eq!(counts_exact(&stack, &url), 6);
    let said = stack.ok(&["jobs", "prune"]);
    assert!(said.starts_with("4 finished job(s) deleted"), "{said}");
    assert_eq!(counts_exact(&stack, &url), 2);

    // Workers prune by themselves, every `interval`; a job still running is never pruned.
    stack.start(&["p1"]);
    stack.provision("h[1-3]").timeout(30.0).ids();
    eventually(Duration::from_secs(15), "the worker to prune to 2", || {
        stack.jobs().len() == 2
    });
    assert_eq!(counts_exact(&stack, &url), 2);
}

#[test]
fn retention_prunes_on_sqlite_with_counts_exact() {
    retention_prunes_and_counts_stay_exact(None);
}

#[test]
fn retention_prunes_on_postgres_with_counts_exact() {
    let db = PgDatabase::new();
    retention_prunes_and_counts_stay_exact(Some(&db));
}

#[test]
fn without_retention_prune_refuses_and_keeps_everything() {
    let stack = Stack::new();
    let err = stack.fails(&["jobs", "prune"], 64);
    assert!(err.contains("no [retention]"), "{err}");
}

#[test]
fn the_web_lists_schedules_and_its_buttons_need_the_form_token() {
    let stack = Stack::with(Options {
        extra: every_second("beat", ""),
        ..Options::default()
    });
    stack.start(&["p1"]);
    eventually(Duration::from_secs(10), "a first firing", || {
        !firings(&stack, "beat").is_empty()
    });
    let app = web::App::new(&stack);
    let page = app.get("/cm/schedules");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("beat") && page.body.contains("every 1s"),
        "{}",
        page.body
    );
    let (status, listed) = app.get_json("/api/schedules");
    assert_eq!(status, 200);
    assert_eq!(listed[0]["name"], "beat");
    assert!(listed[0]["last"]["job_id"].is_string(), "{listed}");

    // Without the session's token: refused, nothing paused.
    let refused = app.post_form("/cm/schedules/beat/pause", &[("csrf", "forged")]);
    assert_eq!(refused.status, 403);
    assert_eq!(schedule(&stack, "beat")["paused"], false);
    let csrf = app.csrf();
    let paused = app.post_form("/cm/schedules/beat/pause", &[("csrf", &csrf)]);
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(schedule(&stack, "beat")["paused"], true);
    let ran = app.post_form("/cm/schedules/beat/run", &[("csrf", &csrf)]);
    assert!(ran.body.contains("fired"), "{}", ran.body);
    eventually(Duration::from_secs(10), "the web's run to fire", || {
        firings(&stack, "beat")[0]["how"] == "manual"
    });
    let unknown = app.post_form("/cm/schedules/nope/run", &[("csrf", &csrf)]);
    assert_eq!(unknown.status, 404);

    let metrics = app.get("/metrics").body;
    assert!(
        metrics.contains("cm_schedule_last_fire_timestamp_seconds{schedule=\"beat\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cm_schedule_missed_slots_total{schedule=\"beat\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_schedule_removed_from_the_config_stops_firing_and_keeps_its_history() {
    let stack = Stack::with(Options {
        extra: every_second("gone", "") + &every_second("stays", ""),
        ..Options::default()
    });
    stack.start(&["p1"]);
    eventually(Duration::from_secs(10), "both to fire", || {
        !firings(&stack, "gone").is_empty() && !firings(&stack, "stays").is_empty()
    });
    stack.edit_config(|text| text.replace("[schedules.gone]", "[schedules.renamed]"));
    stack.ok(&["queue", "restart"]);
    let removed = now_ms();
    let before = firings(&stack, "gone").len();
    sleep(Duration::from_secs(3));
    let after = firings(&stack, "gone");
    assert!(
        after.len() <= before + 1 && after.iter().all(|f| slot(f) <= removed + 1_000),
        "a removed schedule fired: {after:?}"
    );
    let listed = schedule(&stack, "gone");
    assert_eq!(listed["in_config"], false, "{listed}");
    assert!(listed["last"]["job_id"].is_string(), "{listed}");
    assert!(listed["next_slot_ms"].is_null());
    assert!(stack.ok(&["schedules"]).contains("(not in config)"));
    // The others go on.
    assert!(firings(&stack, "stays")
        .iter()
        .any(|f| slot(f) > removed + 1_000));
}

//! The store through its public API and the group-commit writer, on either backend.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use std::borrow::Cow;

use super::testing::{traffic, Model, Traffic};
use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn run(id: &str) -> Vec<Event> {
    let w = SharedText::from("l1@h");
    let state = |s: &'static str, at| Event::State {
        id: id.into(),
        state: s.into(),
        worker: w.clone(),
        at,
    };
    vec![
        Event::Received {
            job: NewJob {
                id: id.into(),
                task: "cm.launch".into(),
                queue: "q".into(),
                args: "[]".into(),
                submitted_ms: 2,
                ..NewJob::default()
            },
            worker: w.clone(),
            at: 2,
        },
        state(STARTED, 3),
        state("running", 4),
        state("deploy", 5),
        Event::Finished {
            id: id.into(),
            state: SUCCESS,
            worker: w.clone(),
            at: 6,
            result: Some("{}".into()),
            error: None,
            output: None,
        },
    ]
}

/// A commit waits for company up to the linger while another job is in hand, not once
/// `enough` commits wait, and not at all when its job is the only one in hand.
#[tokio::test]
async fn a_commit_lingers_for_company_only_while_other_jobs_are_in_hand() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    let events = run("a");
    let long = Duration::from_secs(30);

    let alone = store.writer_with(2, long)?;
    let held = alone.in_flight();
    let t0 = std::time::Instant::now();
    alone.commit(events[0].clone()).await?;
    assert!(t0.elapsed() < long / 2, "alone, waited {:?}", t0.elapsed());
    drop(held);

    let linger = Duration::from_millis(300);
    let with_other = store.writer_with(2, linger)?;
    let (_mine, _other) = (with_other.in_flight(), with_other.in_flight());
    let t0 = std::time::Instant::now();
    with_other.commit(events[1].clone()).await?;
    assert!(t0.elapsed() >= linger, "committed after {:?}", t0.elapsed());

    let pair = store.writer_with(2, long)?;
    let _held = (pair.in_flight(), pair.in_flight(), pair.in_flight());
    let t0 = std::time::Instant::now();
    let (first, second) = tokio::join!(
        pair.commit(events[2].clone()),
        pair.commit(events[4].clone())
    );
    first?;
    second?;
    assert!(t0.elapsed() < long / 2, "waited {:?}", t0.elapsed());
    assert_eq!(store.get("a").await?.map(|r| r.state), Some(SUCCESS.into()));
    Ok(())
}

/// Every job and its history, as the public API reads them.
async fn everything(store: &Store) -> Result<Vec<(JobRow, Vec<EventRow>)>, StoreError> {
    let mut jobs = store.list(&JobFilter::default()).await?;
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::new();
    for job in jobs {
        let history = store.history(&job.id).await?;
        out.push((job, history));
    }
    Ok(out)
}

/// `t` through a writer: each of its commits as one transaction, or every event alone.
async fn write(store: &Store, t: &Traffic, event_by_event: bool) -> Result<(), StoreError> {
    store.reset().await?;
    store.insert_pending(&t.published).await?;
    let writer = store.writer_with(1, Duration::ZERO)?;
    for commit in &t.commits {
        if event_by_event {
            for ev in commit {
                writer.commit(ev.clone()).await?;
            }
        } else if let Some((last, before)) = commit.split_last() {
            // Queued before the writer runs again: one transaction takes them all.
            for ev in before {
                writer.send(ev.clone());
            }
            writer.commit(last.clone()).await?;
        }
    }
    Ok(())
}

/// Generated traffic, through the writer, leaves the same jobs and histories commit by commit
/// as event by event.
pub(super) async fn commits_leave_what_events_one_by_one_do(
    store: &Store,
    samples: usize,
) -> TestResult {
    let mut runner = TestRunner::deterministic();
    for _ in 0..samples {
        let t = traffic()
            .new_tree(&mut runner)
            .map_err(|e| format!("generating traffic: {e}"))?
            .current();
        write(store, &t, false).await?;
        let batched = everything(store).await?;
        write(store, &t, true).await?;
        let alone = everything(store).await?;
        assert_eq!(batched, alone, "{t:#?}");
        assert_eq!(batched, Model::of(&t).everything(), "{t:#?}");
        assert!(!batched.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_commits_leave_what_events_one_by_one_do() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    commits_leave_what_events_one_by_one_do(&store, 12).await
}

/// The CLI's reads: filters, counts, the per-minute buckets and the histogram.
pub(super) async fn reads_answer_what_was_written(store: &Store) -> TestResult {
    store.reset().await?;
    let published: Vec<NewJob> = ["a", "b", "c"]
        .iter()
        .map(|id| NewJob {
            id: (*id).into(),
            task: "cm.launch".into(),
            queue: "q".into(),
            server: Some(if *id == "c" { "s2" } else { "s1" }.into()),
            batch: Some("b1".into()),
            submitted_ms: 1,
            ..NewJob::default()
        })
        .collect();
    store.insert_pending(&published).await?;
    let now = now_ms();
    let writer = store.writer(1)?;
    for mut ev in run("a") {
        match &mut ev {
            Event::Received { at, .. } | Event::State { at, .. } => *at = now - 1_000,
            Event::Finished { at, .. } => *at = now,
            _ => {}
        }
        writer.commit(ev).await?;
    }
    let s1 = JobFilter {
        server: Some("s1".into()),
        ..JobFilter::default()
    };
    assert_eq!(store.count(&s1).await?, 2);
    let page = store
        .list(&JobFilter {
            limit: 1,
            offset: 1,
            ..s1.clone()
        })
        .await?;
    assert_eq!(page.len(), 1);
    assert_eq!(
        store.counts_by_state(&JobFilter::default()).await?,
        [("PENDING".to_string(), 2), ("SUCCESS".to_string(), 1)]
    );
    assert_eq!(store.counts_by_worker().await?, [("l1@h".to_string(), 1)]);
    let per_minute = store.finished_per_minute(5).await?;
    assert_eq!(per_minute.iter().sum::<i64>(), 1);
    let h = store.duration_histogram(&[10, 100_000]).await?;
    assert_eq!(
        (h.count, h.sum_ms, h.at_most),
        (1, 1_000, vec![(10, 0), (100_000, 1)])
    );
    assert_eq!(store.delete_unpublished("b1").await?, 2);
    assert_eq!(store.state_of("b").await?, None);
    assert_eq!(store.reset().await?, 1);
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_reads_answer_what_was_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    reads_answer_what_was_written(&store).await
}

fn published(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        task: "cm.launch".into(),
        queue: "q".into(),
        args: "[]".into(),
        submitted_ms: 1,
        ..NewJob::default()
    }
}

/// A run of job `id` on `worker`: received at `at`, started, the `steps`, ended as `end`.
fn run_on(
    id: &str,
    worker: &str,
    at: i64,
    steps: &[&'static str],
    end: &'static str,
) -> Vec<Event> {
    let w = SharedText::from(worker);
    let mut events = vec![Event::Received {
        job: published(id),
        worker: w.clone(),
        at,
    }];
    for (i, step) in std::iter::once(&STARTED).chain(steps).enumerate() {
        events.push(Event::State {
            id: id.into(),
            state: Cow::Borrowed(step),
            worker: w.clone(),
            at: at + 1 + i as i64,
        });
    }
    events.push(Event::Finished {
        id: id.into(),
        state: end,
        worker: w,
        at: at + 10,
        result: Some(format!(r#"{{"by": "{worker}"}}"#)),
        error: None,
        output: Some(format!("output of {worker}\n")),
    });
    events
}

/// The bug: a long job redelivered by the broker ran twice; run 1 finished SUCCESS, then run 2's
/// later step `active` replaced SUCCESS. Now a final row stays as its first final state left it
/// (worker, times, result, output), whatever another run writes, event by event (job "a") or as
/// one whole-run upsert (job "b"); `deliveries` too; the history alone has both runs.
pub(super) async fn a_final_state_is_never_overwritten(store: &Store) -> TestResult {
    store
        .insert_pending(&[published("a"), published("b")])
        .await?;
    let writer = store.writer(1)?;
    for id in ["a", "b"] {
        for ev in run_on(id, "l1@h", 10, &["running"], SUCCESS) {
            writer.commit(ev).await?;
        }
    }
    let first = store.get("a").await?.ok_or("job a is gone")?;
    let l2 = SharedText::from("l2@h");
    // Run 2 of "a", each event a commit of its own: its step, a lease, a retry, its end.
    let mut second = run_on("a", "l2@h", 100, &["active"], FAILURE);
    second.insert(
        3,
        Event::Leased {
            id: "a".into(),
            worker: l2.clone(),
            at: 102,
            until: 99_000,
        },
    );
    second.insert(
        4,
        Event::Retry {
            id: "a".into(),
            worker: l2.clone(),
            at: 103,
            error: "boom".into(),
            retries: 1,
        },
    );
    for ev in second {
        writer.commit(ev).await?;
    }
    // Run 2 of "b", whole in one commit.
    let whole = run_on("b", "l2@h", 100, &["active"], SUCCESS);
    if let Some((last, before)) = whole.split_last() {
        for ev in before {
            writer.send(ev.clone());
        }
        writer.commit(last.clone()).await?;
    }
    for id in ["a", "b"] {
        let row = store.get(id).await?.ok_or("job is gone")?;
        let expected = JobRow {
            id: id.into(),
            deliveries: 1,
            ..first.clone()
        };
        assert_eq!(row, expected);
        assert_eq!(
            (
                row.state.as_str(),
                row.worker.as_deref(),
                row.started_ms,
                row.finished_ms
            ),
            (SUCCESS, Some("l1@h"), Some(11), Some(20))
        );
        assert_eq!(row.output.as_deref(), Some("output of l1@h\n"));
        assert_eq!((row.lease_owner, row.lease_until), (None, None));
        let history: Vec<(String, Option<String>)> = store
            .history(id)
            .await?
            .into_iter()
            .map(|e| (e.state, e.worker))
            .collect();
        let by = |s: &str, w: &str| (s.to_string(), Some(w.to_string()));
        let mut expected = vec![
            by(PENDING, ""),
            by(RECEIVED, "l1@h"),
            by(STARTED, "l1@h"),
            by("running", "l1@h"),
            by(SUCCESS, "l1@h"),
            by(RECEIVED, "l2@h"),
            by(STARTED, "l2@h"),
            by("active", "l2@h"),
        ];
        if id == "a" {
            expected.extend([by(LEASED, "l2@h"), by(RETRY, "l2@h"), by(FAILURE, "l2@h")]);
        } else {
            expected.push(by(SUCCESS, "l2@h"));
        }
        assert_eq!(history, expected, "job {id}");
    }
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_a_final_state_is_never_overwritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    a_final_state_is_never_overwritten(&store).await
}

/// Revokes are kept (for ids not yet known too) and read back oldest first; a job no worker
/// holds yet ends REVOKED at once, a running one keeps its state, a final one is left alone; a
/// second revoke with terminate upgrades the first and is read again, one without changes
/// nothing.
pub(super) async fn revokes_are_kept_and_end_the_jobs_no_worker_holds(store: &Store) -> TestResult {
    let ids = ["pending", "retry", "running", "done"];
    store.insert_pending(&ids.map(published)).await?;
    let writer = store.writer(1)?;
    let w = SharedText::from("l1@h");
    for ev in run_on("done", "l1@h", 10, &[], SUCCESS) {
        writer.commit(ev).await?;
    }
    for id in ["retry", "running"] {
        let mut run = run_on(id, "l1@h", 10, &["deploy"], SUCCESS);
        run.pop();
        for ev in run {
            writer.commit(ev).await?;
        }
    }
    writer
        .commit(Event::Retry {
            id: "retry".into(),
            worker: w.clone(),
            at: 30,
            error: "boom".into(),
            retries: 1,
        })
        .await?;

    let asked: Vec<String> = ["pending", "retry", "running", "done", "ghost", "pending"]
        .map(String::from)
        .to_vec();
    let before = now_ms();
    let answers = store.revoke(&asked, false, None, "cm@ops").await?;
    let answer = |id: &str, state: Option<&str>| Revoked {
        id: id.into(),
        state: state.map(Into::into),
    };
    assert_eq!(
        answers,
        [
            answer("pending", Some(REVOKED)),
            answer("retry", Some(REVOKED)),
            answer("running", Some("deploy")),
            answer("done", Some(SUCCESS)),
            answer("ghost", None),
        ]
    );
    for id in ["pending", "retry"] {
        let row = store.get(id).await?.ok_or("job is gone")?;
        assert_eq!(row.error.as_deref(), Some("revoked by cm@ops"));
        assert!(row.finished_ms.is_some_and(|t| t >= before), "{row:?}");
        let last = store.history(id).await?.pop().ok_or("no history")?;
        assert_eq!(
            (
                last.state.as_str(),
                last.worker.as_deref(),
                last.detail.as_deref()
            ),
            (REVOKED, Some("cm@ops"), Some("revoked by cm@ops"))
        );
    }
    assert_eq!(store.history("running").await?.len(), 4);
    assert_eq!(store.get("done").await?.map(|r| r.error), Some(None));

    let kept = store.revokes_since(0, 1000).await?;
    let mut kept_ids: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
    kept_ids.sort_unstable();
    assert_eq!(kept_ids, ["done", "ghost", "pending", "retry", "running"]);
    assert!(kept
        .iter()
        .all(|r| !r.terminate && r.signal.is_none() && r.at_ms >= before));
    let newest = kept.iter().map(|r| r.at_ms).max().unwrap_or(0);
    assert!(
        kept.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "{kept:?}"
    );

    // An upgrade to terminate is announced again, past the first revoke's time.
    let running = vec!["running".to_string()];
    store
        .revoke(&running, true, Some("SIGKILL"), "cm@ops2")
        .await?;
    let upgraded = store.revokes_since(newest, 1000).await?;
    assert_eq!(upgraded.len(), 1, "{upgraded:?}");
    let r = &upgraded[0];
    assert_eq!(
        (
            r.id.as_str(),
            r.terminate,
            r.signal.as_deref(),
            r.by.as_deref()
        ),
        ("running", true, Some("SIGKILL"), Some("cm@ops2"))
    );
    assert!(r.at_ms > newest);
    // Revoking again without terminate takes nothing back.
    store.revoke(&running, false, None, "cm@ops").await?;
    assert_eq!(store.revokes_since(newest, 1000).await?, upgraded);
    assert_eq!(store.state_of("running").await?.as_deref(), Some("deploy"));
    // A limit keeps the newest: the upgraded revoke is the newest of all.
    assert_eq!(store.revokes_since(0, 1).await?, upgraded);
    assert_eq!(store.revokes_since(0, 2).await?.len(), 2);

    // A revoked job's message, when it comes, cannot bring it back.
    writer
        .commit(Event::Received {
            job: published("pending"),
            worker: w,
            at: 50,
        })
        .await?;
    assert_eq!(store.state_of("pending").await?.as_deref(), Some(REVOKED));
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_revokes_are_kept_and_end_the_jobs_no_worker_holds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    revokes_are_kept_and_end_the_jobs_no_worker_holds(&store).await
}

/// A long job's lease: taken with the Leased event, renewed only by its owner, lapsed when not,
/// claimed by exactly one of racing reapers, then requeued (PENDING, no lease); its end clears
/// it; a job that ended is neither renewed nor lapsed.
pub(super) async fn leases_are_renewed_lapse_and_are_claimed_once(store: &Store) -> TestResult {
    store
        .insert_pending(&[published("long"), published("ends")])
        .await?;
    let writer = store.writer(1)?;
    for id in ["long", "ends"] {
        let mut run = run_on(id, "l1@h", 10, &[], SUCCESS);
        run.pop();
        for ev in run {
            writer.commit(ev).await?;
        }
        writer
            .commit(Event::Leased {
                id: id.into(),
                worker: "l1@h".into(),
                at: 20,
                until: 1_000,
            })
            .await?;
    }
    let row = store.get("long").await?.ok_or("job is gone")?;
    assert_eq!(
        (
            row.state.as_str(),
            row.lease_owner.as_deref(),
            row.lease_until
        ),
        (STARTED, Some("l1@h"), Some(1_000))
    );
    let leased = store.history("long").await?.pop().ok_or("no history")?;
    assert_eq!(
        (leased.state.as_str(), leased.detail.as_deref()),
        (LEASED, Some("acked; lease until 1970-01-01T00:00:01.000Z"))
    );

    let both = vec!["long".to_string(), "ends".to_string(), "ghost".to_string()];
    assert_eq!(store.renew_leases("l2@h", &both, 5_000).await?, 0);
    assert_eq!(store.renew_leases("l1@h", &both, 2_000).await?, 2);
    assert_eq!(
        store.get("long").await?.and_then(|r| r.lease_until),
        Some(2_000)
    );

    // "ends" ends: its lease goes with it, and it is nobody's to renew or reap.
    if let Some(end) = run_on("ends", "l1@h", 10, &[], SUCCESS).pop() {
        writer.commit(end).await?;
    }
    let ended = store.get("ends").await?.ok_or("job is gone")?;
    assert_eq!((ended.lease_owner, ended.lease_until), (None, None));
    assert_eq!(store.renew_leases("l1@h", &both, 3_000).await?, 1);
    assert_eq!(
        store.get("long").await?.and_then(|r| r.lease_until),
        Some(3_000)
    );

    let lapsed_ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(store.lapsed_leases("q", 3_000, 10).await?.is_empty());
    assert_eq!(
        lapsed_ids(store.lapsed_leases("q", 3_001, 0).await?),
        ["long"]
    );
    assert!(store.lapsed_leases("other", 3_001, 10).await?.is_empty());

    // Reapers race for the lapsed lease: one wins.
    let claim = |reaper| store.claim_lapsed("long", reaper, 3_001, 60_000);
    let claims = tokio::join!(claim("r1"), claim("r2"), claim("r3"), claim("r4"));
    let won = [claims.0?, claims.1?, claims.2?, claims.3?];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let reaper = ["r1", "r2", "r3", "r4"][won.iter().position(|w| *w).unwrap_or(0)];
    assert!(!store.claim_lapsed("ends", "r1", 3_001, 60_000).await?);
    assert!(!store.claim_lapsed("ghost", "r1", 3_001, 60_000).await?);
    assert!(store.lapsed_leases("q", 3_001, 10).await?.is_empty());
    // Its old owner has lost it.
    assert_eq!(store.renew_leases("l1@h", &both, 9_000).await?, 0);

    // Only the reaper that holds it requeues its row; the history notes each call.
    store.requeued("long", "someone-else", "not mine").await?;
    assert_eq!(store.state_of("long").await?.as_deref(), Some(STARTED));
    let detail = "lease of l1@h lapsed at 3000; published again";
    store.requeued("long", reaper, detail).await?;
    let row = store.get("long").await?.ok_or("job is gone")?;
    assert_eq!(
        (row.state.as_str(), row.lease_owner, row.lease_until),
        (PENDING, None, None)
    );
    let history = store.history("long").await?;
    let notes: Vec<(&str, Option<&str>, Option<&str>)> = history
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.state.as_str(), e.worker.as_deref(), e.detail.as_deref()))
        .collect();
    assert_eq!(
        notes,
        [
            (REQUEUED, Some(reaper), Some(detail)),
            (REQUEUED, Some("someone-else"), Some("not mine")),
        ]
    );
    // Of a job that is not there, nothing is noted.
    store.requeued("ghost", reaper, detail).await?;
    assert!(store.history("ghost").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_leases_are_renewed_lapse_and_are_claimed_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    leases_are_renewed_lapse_and_are_claimed_once(&store).await
}

/// A job received before its eta is held SCHEDULED with its options; when due, exactly one of
/// racing schedulers claims it (with the lease columns, so that a lapsed claim goes to the
/// lease reapers) and requeues it; a revoke ends it at once; a final row is never rescheduled.
pub(super) async fn scheduled_jobs_are_held_then_claimed_once_when_due(
    store: &Store,
) -> TestResult {
    let options = MessageOptions {
        eta_ms: Some(5_000),
        expires_ms: Some(9_000),
        time_limit_ms: Some(1_000),
        soft_time_limit_ms: Some(500),
        reply_to: Some("reply-here".into()),
    };
    store.schedule(&published("s1"), &options, "l1@h").await?;
    let later = MessageOptions {
        eta_ms: Some(7_000),
        ..MessageOptions::default()
    };
    store.schedule(&published("s2"), &later, "l1@h").await?;
    let soon = MessageOptions {
        eta_ms: Some(4_000),
        ..MessageOptions::default()
    };
    store.schedule(&published("s3"), &soon, "l1@h").await?;
    let row = store.get("s1").await?.ok_or("job is gone")?;
    assert_eq!(
        (row.state.as_str(), row.worker.as_deref(), row.deliveries),
        (SCHEDULED, Some("l1@h"), 1)
    );
    assert_eq!(row.options, options);
    assert!(!is_final(SCHEDULED) && is_cm_state(SCHEDULED));
    let noted = store.history("s1").await?.pop().ok_or("no history")?;
    assert_eq!(
        (noted.state.as_str(), noted.detail.as_deref()),
        (SCHEDULED, Some("eta 1970-01-01T00:00:05.000Z"))
    );
    let scheduled = JobFilter {
        state: Some(SCHEDULED.into()),
        ..JobFilter::default()
    };
    assert_eq!(store.count(&scheduled).await?, 3);

    // A revoke ends a scheduled job at once: it is never due.
    let revoked = store
        .revoke(&["s3".to_string()], false, None, "cm@ops")
        .await?;
    assert_eq!(revoked[0].state.as_deref(), Some(REVOKED));
    let ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(store
        .claim_due("q", "r1", 4_999, 60_000, 10)
        .await?
        .is_empty());

    // Due: schedulers race; exactly one claims it, with its options to publish it again.
    let claim = |owner| store.claim_due("q", owner, 6_000, 60_000, 10);
    let claims = tokio::join!(claim("r1"), claim("r2"), claim("r3"), claim("r4"));
    let claims = [claims.0?, claims.1?, claims.2?, claims.3?];
    let winners: Vec<usize> = (0..4).filter(|&i| !claims[i].is_empty()).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let winner = ["r1", "r2", "r3", "r4"][winners[0]];
    let claimed = &claims[winners[0]];
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].options, options);
    assert_eq!(claimed[0].lease_owner.as_deref(), Some(winner));
    assert!(store
        .claim_due("q", "r1", 6_000, 60_000, 10)
        .await?
        .is_empty());
    assert!(store
        .claim_due("other", "r1", 8_000, 60_000, 10)
        .await?
        .is_empty());
    store
        .requeued("s1", winner, "eta reached; published again")
        .await?;
    let row = store.get("s1").await?.ok_or("job is gone")?;
    assert_eq!(
        (row.state.as_str(), row.lease_owner, row.lease_until),
        (PENDING, None, None)
    );

    // A claim whose claimer died lapses like a lease: the lease reapers take it over.
    assert_eq!(
        ids(store.claim_due("q", "r2", 8_000, 8_500, 10).await?),
        ["s2"]
    );
    assert_eq!(ids(store.lapsed_leases("q", 9_000, 10).await?), ["s2"]);

    // A final row stays final, and gets no SCHEDULED history row.
    let before = store.history("s3").await?.len();
    store.schedule(&published("s3"), &soon, "l2@h").await?;
    assert_eq!(store.state_of("s3").await?.as_deref(), Some(REVOKED));
    assert_eq!(store.history("s3").await?.len(), before);
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_scheduled_jobs_are_held_then_claimed_once_when_due() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    scheduled_jobs_are_held_then_claimed_once_when_due(&store).await
}

/// What counting the store's rows gives.
struct Counted {
    by_state: Vec<(String, i64)>,
    by_worker: Vec<(String, i64)>,
    /// Jobs finished per minute of the last day, the minutes with none left out, sorted.
    per_minute: Vec<i64>,
}

/// The minutes the kept per-minute counts cover: a day's.
const A_DAY: i64 = 1440;

/// Counts of the store's rows, by counting them: `COUNT(*) ... GROUP BY state` in the database,
/// and every count again from every listed row.
async fn counted(store: &Store) -> Result<Counted, StoreError> {
    use std::collections::BTreeMap;
    let rows = store.list(&JobFilter::default()).await?;
    let (mut by_state, mut by_worker, mut by_minute) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let since = now_ms() / 60_000 - (A_DAY - 1);
    for row in &rows {
        *by_state.entry(row.state.clone()).or_insert(0) += 1;
        if let Some(w) = &row.worker {
            *by_worker.entry(w.clone()).or_insert(0) += 1;
        }
        if let Some(minute) = row
            .finished_ms
            .map(|ms| ms / 60_000)
            .filter(|m| *m >= since)
        {
            *by_minute.entry(minute).or_insert(0) += 1;
        }
    }
    let by_state: Vec<_> = by_state.into_iter().collect();
    let grouped = on_backend!(store, b => b.counts_by_state(&JobFilter::default()).await)?;
    assert_eq!(
        grouped, by_state,
        "COUNT(*) GROUP BY state against the rows"
    );
    let mut per_minute: Vec<i64> = by_minute.into_values().collect();
    per_minute.sort_unstable();
    Ok(Counted {
        by_state,
        by_worker: by_worker.into_iter().collect(),
        per_minute,
    })
}

/// Every count the store keeps (all jobs, per state, one state, per worker) is what counting
/// the rows gives, `when`.
async fn assert_kept_counts_are_counted(store: &Store, when: &str) -> TestResult {
    let Counted {
        by_state,
        by_worker,
        per_minute,
    } = counted(store).await?;
    let all = JobFilter::default();
    assert_eq!(store.counts_by_state(&all).await?, by_state, "{when}");
    assert_eq!(store.counts_by_worker().await?, by_worker, "{when}");
    // Sorted, not by position: a minute may turn between the two reads. (No job here finished
    // near a day ago, where one could leave the window between them.)
    let mut minutes: Vec<i64> = store.finished_per_minute(A_DAY).await?;
    minutes.retain(|n| *n > 0);
    minutes.sort_unstable();
    assert_eq!(minutes, per_minute, "{when}: finished per minute");
    let total: i64 = by_state.iter().map(|(_, n)| n).sum();
    let counted_total = on_backend!(store, b => b.count(&all).await)?;
    assert_eq!(
        (store.count(&all).await?, counted_total),
        (total, total),
        "{when}"
    );
    for (state, n) in by_state.iter().chain(&[("NOSUCH".to_string(), 0)]) {
        let one = JobFilter {
            state: Some(state.clone()),
            ..JobFilter::default()
        };
        assert_eq!(store.count(&one).await?, *n, "{when}: {state}");
        // The rows themselves, by whatever index the backend looks a state up in.
        let counted = on_backend!(store, b => b.count(&one).await)?;
        assert_eq!(counted, *n, "{when}: {state}, counted");
        let listed = store.list(&one).await?;
        assert_eq!(listed.len() as i64, *n, "{when}: {state}, listed");
        assert!(listed.iter().all(|j| &j.state == state), "{when}: {state}");
        let past_the_last = JobFilter {
            offset: *n,
            ..one.clone()
        };
        assert_eq!(
            store.list(&past_the_last).await?.len(),
            0,
            "{when}: {state}"
        );
        if *n > 0 {
            let last = JobFilter {
                offset: n - 1,
                ..one.clone()
            };
            assert_eq!(store.list(&last).await?.len(), 1, "{when}: {state}, last");
        }
        let expected: Vec<_> = by_state
            .iter()
            .filter(|(s, _)| s == state)
            .cloned()
            .collect();
        assert_eq!(
            store.counts_by_state(&one).await?,
            expected,
            "{when}: {state}"
        );
    }
    Ok(())
}

/// The counts kept as rows change stay those of the rows through every way a row changes:
/// published, run whole in one commit and event by event, a late final state refused, a retry
/// and its redelivery to another worker, revokes, scheduling, a requeue, unpublished jobs taken
/// back, generated traffic (redeliveries, blind reruns, leases), and db_reset. The runs here
/// end a minute ago, in the per-minute counts' window; the generated ones at time 0, out of it.
pub(super) async fn kept_counts_are_the_rows_counted(store: &Store) -> TestResult {
    let t = now_ms() - 60_000;
    store.reset().await?;
    assert_kept_counts_are_counted(store, "empty").await?;
    let b2 = NewJob {
        batch: Some("b2".into()),
        ..published("d")
    };
    store
        .insert_pending(&[published("a"), published("b"), published("c"), b2])
        .await?;
    assert_kept_counts_are_counted(store, "published").await?;

    let writer = store.writer(1)?;
    let whole = run_on("a", "l1@h", t, &["running"], SUCCESS);
    if let Some((last, before)) = whole.split_last() {
        for ev in before {
            writer.send(ev.clone());
        }
        writer.commit(last.clone()).await?;
    }
    assert_kept_counts_are_counted(store, "a whole run in one commit").await?;
    // Another run of "a", on another worker, ends FAILURE: refused, the counts unchanged.
    for ev in run_on("a", "l2@h", t + 20, &[], FAILURE) {
        writer.commit(ev).await?;
    }
    assert_eq!(store.state_of("a").await?.as_deref(), Some(SUCCESS));
    assert_kept_counts_are_counted(store, "a late final state refused").await?;

    let mut retried = run_on("b", "l2@h", t, &[], SUCCESS);
    retried.truncate(2);
    retried.push(Event::Retry {
        id: "b".into(),
        worker: "l2@h".into(),
        at: t + 2,
        error: "again".into(),
        retries: 1,
    });
    for ev in retried {
        writer.commit(ev).await?;
    }
    assert_kept_counts_are_counted(store, "a retry").await?;
    for ev in run_on("b", "l1@h", t + 5, &["deploy"], SUCCESS)
        .into_iter()
        .take(3)
    {
        writer.commit(ev).await?;
    }
    assert_kept_counts_are_counted(store, "redelivered to another worker, mid-run").await?;

    store
        .revoke(&["c".into(), "a".into()], false, None, "cm@ops")
        .await?;
    assert_eq!(store.state_of("c").await?.as_deref(), Some(REVOKED));
    assert_kept_counts_are_counted(store, "revokes").await?;

    let eta = MessageOptions {
        eta_ms: Some(5_000),
        ..MessageOptions::default()
    };
    store.schedule(&published("e"), &eta, "l1@h").await?;
    store.schedule(&published("a"), &eta, "l2@h").await?;
    assert_eq!(store.state_of("a").await?.as_deref(), Some(SUCCESS));
    assert_kept_counts_are_counted(store, "scheduled").await?;
    assert_eq!(
        store.claim_due("q", "r1", 6_000, 60_000, 10).await?.len(),
        1
    );
    store.requeued("e", "r1", "eta reached").await?;
    assert_eq!(store.state_of("e").await?.as_deref(), Some(PENDING));
    assert_kept_counts_are_counted(store, "requeued").await?;
    assert_eq!(store.delete_unpublished("b2").await?, 1);
    assert_kept_counts_are_counted(store, "unpublished taken back").await?;

    // Enough changes at once for the SQLite writer to fold them into the counts, then more.
    let many: Vec<NewJob> = (0..1100).map(|i| published(&format!("many-{i}"))).collect();
    store.insert_pending(&many).await?;
    assert_kept_counts_are_counted(store, "many published").await?;
    for i in 0..40 {
        let id = format!("many-{i}");
        let end = if i % 4 == 0 { FAILURE } else { SUCCESS };
        let run = run_on(&id, WORKERS_OF_MANY[i % 2], t + i as i64, &[], end);
        if let Some((last, before)) = run.split_last() {
            for ev in before {
                writer.send(ev.clone());
            }
            writer.commit(last.clone()).await?;
        }
    }
    assert_kept_counts_are_counted(store, "some of many run").await?;

    let mut runner = TestRunner::deterministic();
    for sample in 0..6 {
        let t = traffic()
            .new_tree(&mut runner)
            .map_err(|e| format!("generating traffic: {e}"))?
            .current();
        write(store, &t, sample % 2 == 1).await?;
        assert_kept_counts_are_counted(store, &format!("traffic {t:#?}")).await?;
    }
    store.reset().await?;
    assert_kept_counts_are_counted(store, "reset").await?;
    assert!(store
        .counts_by_state(&JobFilter::default())
        .await?
        .is_empty());
    // A reset leaves the counting of deletes as it was.
    let b3 = |id: &str| NewJob {
        batch: Some("b3".into()),
        ..published(id)
    };
    store
        .insert_pending(&[b3("x"), b3("y"), published("z")])
        .await?;
    assert_eq!(store.delete_unpublished("b3").await?, 2);
    assert_kept_counts_are_counted(store, "deleted after a reset").await?;
    assert_eq!(store.count(&JobFilter::default()).await?, 1);
    Ok(())
}

const WORKERS_OF_MANY: [&str; 2] = ["p1@h", "p2@h"];

#[tokio::test]
async fn on_an_sqlite_file_kept_counts_are_the_rows_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    kept_counts_are_the_rows_counted(&store).await
}

#[tokio::test]
async fn in_memory_kept_counts_are_the_rows_counted() -> TestResult {
    let store = Store::open(&StoreLocation::SqliteMemory).await?;
    kept_counts_are_the_rows_counted(&store).await
}

//! A worker's group commits: how long one waits for company, that commits leave what
//! events one by one do, and that a final state is never overwritten.

use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::*;
use crate::store::testing::{traffic, Model};

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

/// Generated traffic, through the writer, leaves the same jobs and histories commit by commit
/// as event by event.
pub(in crate::store) async fn commits_leave_what_events_one_by_one_do(
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

/// The bug: a long job redelivered by the broker ran twice; run 1 finished SUCCESS, then run 2's
/// later step `active` replaced SUCCESS. Now a final row stays as its first final state left it
/// (worker, times, result, output), whatever another run writes, event by event (job "a") or as
/// one whole-run upsert (job "b"); `deliveries` too; the history alone has both runs.
pub(in crate::store) async fn a_final_state_is_never_overwritten(store: &Store) -> TestResult {
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
            job: JobSpec {
                id: id.into(),
                ..first.job.clone()
            },
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

/// A job given back mid-run is PENDING again, its history saying by whom and why, and a revoke
/// then ends it at once; a give-back never reopens a final job, nor takes a job another worker
/// received meanwhile.
pub(in crate::store) async fn a_job_given_back_is_pending_and_says_why(
    store: &Store,
) -> TestResult {
    store
        .insert_pending(&[published("back"), published("done"), published("moved")])
        .await?;
    let writer = store.writer(1)?;
    let given_back = |id: &str, worker: &str| Event::GivenBack {
        id: id.into(),
        worker: worker.into(),
        at: 50,
        why: "stopping".into(),
    };
    for id in ["back", "done", "moved"] {
        let mut run = run_on(id, "l1@h", 10, &["running"], SUCCESS);
        if id != "done" {
            run.pop();
        }
        for ev in run {
            writer.send(ev);
        }
    }
    // "moved" was received by l2 (its message came back another way) before l1 gives it back.
    let mut l2 = run_on("moved", "l2@h", 40, &[], SUCCESS);
    l2.truncate(2);
    for ev in l2 {
        writer.send(ev);
    }
    for id in ["back", "done"] {
        writer.send(given_back(id, "l1@h"));
    }
    writer.commit(given_back("moved", "l1@h")).await?;

    let state = |row: Option<JobRow>| row.map(|r| (r.state, r.worker));
    let on = |s: &str, w: &str| Some((s.to_string(), Some(w.to_string())));
    assert_eq!(state(store.get("back").await?), on(PENDING, "l1@h"));
    assert_eq!(state(store.get("done").await?), on(SUCCESS, "l1@h"));
    assert_eq!(state(store.get("moved").await?), on(STARTED, "l2@h"));
    let last = store.history("back").await?.pop().ok_or("no history")?;
    assert_eq!(
        (
            last.state.as_str(),
            last.worker.as_deref(),
            last.detail.as_deref()
        ),
        (
            REQUEUED,
            Some("l1@h"),
            Some("given back by l1@h: stopping; its message went back to the queue")
        )
    );

    let answers = store
        .revoke(&["back".to_string()], false, None, "cm@h")
        .await?;
    assert_eq!(answers[0].state.as_deref(), Some(REVOKED));
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_a_job_given_back_is_pending_and_says_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    a_job_given_back_is_pending_and_says_why(&store).await
}

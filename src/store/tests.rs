//! The store through its public API and the group-commit writer, on either backend.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::testing::{traffic, Traffic};
use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn run(id: &str) -> Vec<Event> {
    let w = Shared::from("l1@h");
    let state = |s: &'static str, at| Event::State {
        id: id.into(),
        state: s,
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
        },
    ]
}

/// A commit waits for company up to the linger, but not once `enough` commits wait.
#[tokio::test]
async fn a_commit_lingers_for_company_until_enough_commits_wait() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    let events = run("a");

    let linger = Duration::from_millis(300);
    let alone = store.writer_with(2, linger)?;
    let t0 = std::time::Instant::now();
    alone.commit(events[0].clone()).await?;
    assert!(t0.elapsed() >= linger, "committed after {:?}", t0.elapsed());

    let long = Duration::from_secs(30);
    let pair = store.writer_with(2, long)?;
    let t0 = std::time::Instant::now();
    let (first, second) = tokio::join!(
        pair.commit(events[1].clone()),
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

//! The kept counts against the rows counted.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::*;
use crate::store::testing::traffic;

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
pub(in crate::store) async fn kept_counts_are_the_rows_counted(store: &Store) -> TestResult {
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

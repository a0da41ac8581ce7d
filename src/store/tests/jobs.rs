//! The CLI's reads of the jobs: filters, counts, the per-minute buckets and the histogram.

use super::*;

/// The CLI's reads: filters, counts, the per-minute buckets and the histogram.
pub(in crate::store) async fn reads_answer_what_was_written(store: &Store) -> TestResult {
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

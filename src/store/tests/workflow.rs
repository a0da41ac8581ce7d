//! Workflows: children released once by their parents' ends, whichever transactions end them.

use super::*;

/// `n` children, each after two parents; two writers (two hosts' workers) end the first
/// parents and the second parents side by side, job by job. Every child is released exactly
/// once: PENDING, one outbox row, one "due" history row; a claim takes each once.
pub(in crate::store) async fn parents_ending_side_by_side_release_each_child_once(
    store: &Store,
) -> TestResult {
    let n = 60;
    let name = |p: &str, i: usize| format!("{p}{i:03}");
    let parents: Vec<NewJob> = (0..n)
        .flat_map(|i| [published(&name("a", i)), published(&name("b", i))])
        .collect();
    store.insert_pending(&parents).await?;
    for i in 0..n {
        let after = Parents {
            after: vec![name("a", i), name("b", i)],
            after_any: vec![],
        };
        store
            .insert_waiting(&[published(&name("c", i))], &after, 10)
            .await?;
    }
    assert_eq!(store.state_of("c000").await?.as_deref(), Some(WAITING));
    let (one, two) = (store.writer(1)?, store.writer(1)?);
    let end = |writer: Writer, parent: &'static str, host: &'static str| async move {
        for i in 0..n {
            for ev in run_on(&name(parent, i), host, 10, &[], SUCCESS) {
                writer.commit(ev).await?;
            }
        }
        Ok::<_, StoreError>(())
    };
    let (a, b) = tokio::join!(end(one, "a", "l1@a"), end(two, "b", "l2@b"));
    a?;
    b?;
    let now = now_ms();
    let claimed = store
        .claim_outbox("test", now, now + 60_000, 1000, None)
        .await?;
    let mut ids: Vec<&str> = claimed.iter().map(|r| r.job.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "each child once: {ids:?}");
    assert_eq!(claimed.len(), n);
    assert!(store
        .claim_outbox("other", now, now + 60_000, 1000, None)
        .await?
        .is_empty());
    for i in 0..n {
        let id = name("c", i);
        assert_eq!(store.state_of(&id).await?.as_deref(), Some(PENDING), "{id}");
        let due = (store.history(&id).await?.iter())
            .filter(|e| e.state == PENDING)
            .count();
        assert_eq!(due, 1, "{id} released once");
    }
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_parents_ending_side_by_side_release_each_child_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    parents_ending_side_by_side_release_each_child_once(&store).await
}

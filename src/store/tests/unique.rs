//! Unique jobs' keys: taken with the job's row, refused while held, released by every state
//! change that ends their window and by every delete; and two stores (two hosts) racing for
//! one key make one job.

use super::*;

fn claim(id: &str, key: &str, hold: &'static str) -> UniqueClaim {
    UniqueClaim {
        job_id: id.into(),
        key: key.into(),
        hold,
    }
}

fn in_batch(id: &str, batch: &str) -> NewJob {
    NewJob {
        batch: Some(batch.into()),
        ..published(id)
    }
}

fn state(id: &str, state: &'static str) -> Event {
    Event::State {
        id: id.into(),
        state: state.into(),
        worker: "l1@h".into(),
        at: now_ms(),
    }
}

fn end(id: &str, state: &'static str) -> Event {
    Event::Finished {
        spawned: Vec::new(),
        id: id.into(),
        state,
        worker: "l1@h".into(),
        at: now_ms(),
        result: None,
        error: None,
        output: None,
    }
}

/// Publishes job `id` with key `key`: the holder it was refused for, if any.
async fn publish(
    store: &Store,
    id: &str,
    key: &str,
    hold: &'static str,
) -> Result<Option<String>, StoreError> {
    let dups = store
        .insert_pending_unique(&[in_batch(id, "b")], &[claim(id, key, hold)])
        .await?;
    Ok(dups.into_iter().next().map(|d| d.holder))
}

/// Held while queued (`queued`: until STARTED; `unfinished`: until the end, a retry's wait
/// included), released by an end, a revoke, a take-back and a reset; a Celery client's job
/// takes its key on first receipt.
pub(in crate::store) async fn keys_are_held_for_their_window(store: &Store) -> TestResult {
    store.reset().await?;
    let (q, u) = (UNIQUE_QUEUED, UNIQUE_UNFINISHED);
    // Two of one key in one batch: the second is refused for the first, and not stored.
    let dups = store
        .insert_pending_unique(
            &[published("a"), published("b"), published("c")],
            &[
                claim("a", "k1", q),
                claim("b", "k1", q),
                claim("c", "k2", u),
            ],
        )
        .await?;
    assert_eq!(
        dups,
        [Duplicate {
            job_id: "b".into(),
            key: "k1".into(),
            holder: "a".into()
        }]
    );
    assert_eq!(store.state_of("b").await?, None);
    assert_eq!(store.unique_holder("k1").await?.as_deref(), Some("a"));

    let writer = store.writer_with(1, Duration::ZERO)?;
    // `queued`: RECEIVED still holds it, STARTED frees it.
    writer
        .commit(Event::Received {
            job: published("a"),
            worker: "l1@h".into(),
            at: now_ms(),
        })
        .await?;
    assert_eq!(publish(store, "d", "k1", q).await?.as_deref(), Some("a"));
    // So does THROTTLED: held at a gate, it has not started.
    writer.commit(state("a", THROTTLED)).await?;
    assert_eq!(publish(store, "d", "k1", q).await?.as_deref(), Some("a"));
    writer.commit(state("a", STARTED)).await?;
    assert_eq!(publish(store, "d", "k1", q).await?, None);
    assert_eq!(store.unique_holder("k1").await?.as_deref(), Some("d"));

    // `unfinished`: STARTED and a retry's wait hold it, the end frees it.
    writer.commit(state("c", STARTED)).await?;
    writer
        .commit(Event::Retry {
            id: "c".into(),
            worker: "l1@h".into(),
            at: now_ms(),
            error: "exit status 75".into(),
            retries: 1,
        })
        .await?;
    assert_eq!(publish(store, "e", "k2", u).await?.as_deref(), Some("c"));
    writer.commit(end("c", FAILURE)).await?;
    assert_eq!(publish(store, "e", "k2", u).await?, None);

    // A revoke of a queued job frees its key at once.
    store.revoke(&["e".into()], false, None, "cm@h").await?;
    assert_eq!(store.unique_holder("k2").await?, None);

    // Taken back unpublished (the broker refused the batch): its keys go with the rows.
    assert_eq!(store.unique_holder("k1").await?.as_deref(), Some("d"));
    store.delete_unpublished("b").await?;
    assert_eq!(store.unique_holder("k1").await?, None);

    // A Celery client's job: the first receipt stores it with its key; a second job of the key
    // is refused for it and not stored; a job the store knows is left alone.
    assert_eq!(
        store
            .receive_unique(&published("f"), &claim("f", "k3", u))
            .await?,
        None
    );
    assert_eq!(store.state_of("f").await?.as_deref(), Some(PENDING));
    let refused = store
        .receive_unique(&published("g"), &claim("g", "k3", u))
        .await?;
    assert_eq!(refused.map(|d| d.holder).as_deref(), Some("f"));
    assert_eq!(store.state_of("g").await?, None);
    assert_eq!(
        store
            .receive_unique(&published("a"), &claim("a", "k3", u))
            .await?,
        None
    );

    // A reset forgets every key.
    store.reset().await?;
    assert_eq!(store.unique_holder("k3").await?, None);
    Ok(())
}

/// `n` publishes of one key, alternately through `one` and `two` (two hosts' stores) at once:
/// one job is stored, and every refusal names it.
pub(in crate::store) async fn racing_publishers_make_one_job(
    one: &Store,
    two: &Store,
    n: usize,
) -> TestResult {
    one.reset().await?;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move {
                let id = format!("r{i}");
                publish(&store, &id, "race", UNIQUE_UNFINISHED).await
            })
        })
        .collect();
    let mut holders = Vec::new();
    for t in tasks {
        holders.push(t.await??);
    }
    let stored = one.list(&JobFilter::default()).await?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let winner = &stored[0].job.id;
    assert_eq!(holders.iter().filter(|h| h.is_none()).count(), 1);
    assert!(holders.iter().flatten().all(|h| h == winner), "{holders:?}");
    Ok(())
}

#[tokio::test]
async fn on_an_sqlite_file_unique_keys_are_held_for_their_window() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreLocation::SqliteFile(dir.path().join("s.db"))).await?;
    keys_are_held_for_their_window(&store).await
}

#[tokio::test]
async fn on_an_sqlite_file_racing_publishers_make_one_job() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = StoreLocation::SqliteFile(dir.path().join("s.db"));
    let (one, two) = (Store::open(&path).await?, Store::open(&path).await?);
    racing_publishers_make_one_job(&one, &two, 20).await
}

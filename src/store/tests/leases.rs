//! Leases: renewed, lapsed, and claimed by one reaper.

use super::*;

/// A long job's lease: taken with the Leased event, renewed only by its owner, lapsed when not,
/// claimed by exactly one of racing reapers, then requeued (PENDING, no lease); its end clears
/// it; a job that ended is neither renewed nor lapsed.
pub(in crate::store) async fn leases_are_renewed_lapse_and_are_claimed_once(
    store: &Store,
) -> TestResult {
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

    let lapsed_ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.job.id).collect::<Vec<_>>();
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

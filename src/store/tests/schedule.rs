//! Jobs held until their eta, then claimed once when due.

use super::*;

/// A job received before its eta is held SCHEDULED with its options; when due, exactly one of
/// racing schedulers claims it (with the lease columns, so that a lapsed claim goes to the
/// lease reapers) and requeues it; a revoke ends it at once; a final row is never rescheduled.
pub(in crate::store) async fn scheduled_jobs_are_held_then_claimed_once_when_due(
    store: &Store,
) -> TestResult {
    let options = MessageOptions {
        eta_ms: Some(5_000),
        expires_ms: Some(9_000),
        time_limit_ms: Some(1_000),
        soft_time_limit_ms: Some(500),
        reply_to: Some("reply-here".into()),
        priority: 3,
        ..MessageOptions::default()
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
    assert_eq!(*row.job.options, options);
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
    let ids = |rows: Vec<JobRow>| rows.into_iter().map(|r| r.job.id).collect::<Vec<_>>();
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
    assert_eq!(*claimed[0].job.options, options);
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

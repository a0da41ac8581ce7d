//! Revokes, kept for every worker, and the jobs they end at once.

use super::*;

/// Revokes are kept (for ids not yet known too) and read back oldest first; a job no worker
/// holds yet ends REVOKED at once, a running one keeps its state, a final one is left alone; a
/// second revoke with terminate upgrades the first and is read again, one without changes
/// nothing.
pub(in crate::store) async fn revokes_are_kept_and_end_the_jobs_no_worker_holds(
    store: &Store,
) -> TestResult {
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

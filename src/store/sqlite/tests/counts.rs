//! The kept counts' fold.

use super::*;

/// The changes the triggers record are folded into the counts once they are many: the log is
/// empty again after a publish of more than `FOLD_AT` jobs, the counts those of the rows; a few
/// changes wait in the log, and the counts read them too; many written by another program are
/// folded by the next read.
#[tokio::test]
async fn many_changes_are_folded_into_the_counts() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    let store = crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    let job = |id: String| NewJob {
        id,
        task: "t".into(),
        queue: "q".into(),
        ..NewJob::default()
    };
    let many: Vec<NewJob> = (0..1100).map(|i| job(format!("j{i}"))).collect();
    store.insert_pending(&many).await?;
    let conn = Connection::open(&path)?;
    let waiting = || -> rusqlite::Result<i64> {
        conn.query_row("SELECT COUNT(*) FROM job_count_changes", [], |r| r.get(0))
    };
    assert_eq!(waiting()?, 0);
    let all = crate::store::JobFilter::default();
    assert_eq!(
        store.counts_by_state(&all).await?,
        [("PENDING".into(), 1100)]
    );
    store.insert_pending(&[job("one more".into())]).await?;
    store.revoke(&["j0".into()], false, None, "cm@ops").await?;
    assert_eq!(waiting()?, 2);
    assert_eq!(
        store.counts_by_state(&all).await?,
        [("PENDING".into(), 1100), ("REVOKED".into(), 1)]
    );
    assert_eq!(store.count(&all).await?, 1101);

    // Rows that another program inserts are counted by the triggers; the first read folds them.
    conn.execute_batch(
        "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 1100) \
         INSERT INTO jobs (id, task, queue, state, worker) \
         SELECT 'bulk' || i, 't', 'q', 'SUCCESS', 'w1' FROM g",
    )?;
    assert!(waiting()? > 1100);
    assert_eq!(store.counts_by_worker().await?, [("w1".into(), 1100)]);
    assert_eq!(waiting()?, 0);
    assert_eq!(
        store.counts_by_state(&all).await?,
        [
            ("PENDING".into(), 1100),
            ("REVOKED".into(), 1),
            ("SUCCESS".into(), 1100)
        ]
    );
    Ok(())
}

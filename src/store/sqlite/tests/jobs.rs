//! Reading a job's history.

use super::*;

/// A `later` column cm did not write is refused by name, not skipped.
#[tokio::test]
async fn an_unreadable_history_row_names_its_job() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    let store = crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    Connection::open(&path)?.execute(
        "INSERT INTO job_events (job_id, state, at_ms, later) VALUES ('x', 'PENDING', 1, '{')",
        [],
    )?;
    let err = store.history("x").await.err();
    assert!(
        matches!(&err, Some(StoreError::BadHistory { id, .. }) if id == "x"),
        "{err:?}"
    );
    Ok(())
}

//! Opening older files: one that sqlx migrated, and one from before the kept counts.

use super::*;

/// The schema as cm's sqlx versions left it: `_sqlx_migrations` with versions 1 to `applied`
/// (sqlx's own table definition), those migrations run, and a job in it.
fn sqlx_era_file(path: &Path, applied: usize) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )?;
    for (i, sql) in migrate::MIGRATIONS.iter().take(applied).enumerate() {
        conn.execute_batch(sql)?;
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, 'm', TRUE, x'00', 1)",
            [i as i64 + 1],
        )?;
    }
    conn.execute(
        "INSERT INTO jobs (id, task, queue, state, submitted_ms) VALUES ('old', 'cm.launch', 'q', 'SUCCESS', 5)",
        [],
    )?;
    Ok(())
}

/// A file migrated by cm's sqlx versions opens, keeps its jobs, and takes new ones; one that
/// sqlx left part-way migrated gets the rest.
#[tokio::test]
async fn a_file_migrated_by_sqlx_is_adopted() -> Result<(), Box<dyn std::error::Error>> {
    for applied in [3, 2] {
        let (_dir, path) = temp_store()?;
        sqlx_era_file(&path, applied)?;
        let store = crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
        assert_eq!(store.state_of("old").await?.as_deref(), Some("SUCCESS"));
        let writer = store.writer(1)?;
        writer
            .commit(Event::Received {
                job: NewJob {
                    id: "new".into(),
                    ..NewJob::default()
                },
                worker: "w".into(),
                at: 1,
            })
            .await?;
        assert_eq!(store.history("new").await?.len(), 1);
        let conn = Connection::open(&path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, migrate::MIGRATIONS.len() as i64);
        // And opening it again changes nothing.
        drop(store);
        crate::store::Store::open(&StoreLocation::SqliteFile(path)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_migration_sqlx_left_failed_is_refused_by_name() -> Result<(), Box<dyn std::error::Error>>
{
    let (_dir, path) = temp_store()?;
    sqlx_era_file(&path, 2)?;
    Connection::open(&path)?.execute(
        "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 2",
        [],
    )?;
    let err = crate::store::Store::open(&StoreLocation::SqliteFile(path))
        .await
        .err();
    assert!(
        matches!(&err, Some(StoreError::Migration { cause, .. }) if cause.contains("migration 2 failed")),
        "{err:?}"
    );
    Ok(())
}

/// A store from before the kept counts (migrations 1 to 5) gets them from its rows when it is
/// migrated.
#[tokio::test]
async fn a_store_with_jobs_gets_its_counts_when_migrated() -> Result<(), Box<dyn std::error::Error>>
{
    let (_dir, path) = temp_store()?;
    let conn = migrated_to(&path, 5)?;
    conn.execute_batch(
        "INSERT INTO jobs (id, task, queue, state, worker) VALUES ('a', 't', 'q', 'SUCCESS', 'w1'), \
         ('b', 't', 'q', 'SUCCESS', 'w2'), ('c', 't', 'q', 'PENDING', NULL)",
    )?;
    drop(conn);
    let store = crate::store::Store::open(&StoreLocation::SqliteFile(path)).await?;
    assert_eq!(
        store
            .counts_by_state(&crate::store::JobFilter::default())
            .await?,
        [("PENDING".into(), 1), ("SUCCESS".into(), 2)]
    );
    assert_eq!(
        store.counts_by_worker().await?,
        [("w1".into(), 1), ("w2".into(), 1)]
    );
    Ok(())
}

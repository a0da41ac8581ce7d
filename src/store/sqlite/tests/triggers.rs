//! The releases of a job's state change as migration 0019 (thin triggers) runs them: one small
//! trigger on `jobs`, the work behind it in the INSTEAD OF triggers of the view `job_ends` (a
//! key's and a slot's deletes, the release of waiting children). Written as SQL on the store
//! file, the way any writer (a worker's commit, a revoke) changes a row.

use super::*;

/// A connection to a migrated store file, with the settings every store connection has.
fn conn_to(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    settings(&conn, Duration::from_secs(5))?;
    Ok(conn)
}

fn state_of(conn: &Connection, id: &str) -> rusqlite::Result<String> {
    conn.query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
}

/// A store file migrated before 0019 with a parent that holds a key and a slot and has waiting
/// children, migrated on open: one single-row UPDATE to FAILURE frees the key and the slot,
/// revokes the `after` child and, through it, its own child, and makes the `after_any` child
/// due. The view stores nothing.
#[tokio::test]
async fn one_final_update_releases_keys_slots_and_children(
) -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    // Before 0019 and 0020, the last two.
    let before = migrate::MIGRATIONS.len() - 2;
    let conn = migrated_to(&path, before)?;
    conn.execute_batch(
        "INSERT INTO jobs (id, task, queue, state) VALUES ('p', 't', 'q', 'STARTED'), \
         ('a', 't', 'q', 'WAITING'), ('any', 't', 'q', 'WAITING'), ('g', 't', 'q', 'WAITING'); \
         INSERT INTO job_edges (child, parent, mode) VALUES ('a', 'p', 'after'), \
         ('any', 'p', 'after_any'), ('g', 'a', 'after'); \
         INSERT INTO unique_keys VALUES ('k', 'p', 'unfinished', 1); \
         INSERT INTO flow_slots (job_id, gate, taken_ms) VALUES ('p', 'key:x', 1);",
    )?;
    drop(conn);
    crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;

    let conn = conn_to(&path)?;
    let changed = conn.execute(
        "UPDATE jobs SET state = 'FAILURE' WHERE id = 'p' AND NOT (state = 'SUCCESS' \
         OR state = 'FAILURE' OR state = 'REVOKED')",
        [],
    )?;
    assert_eq!(changed, 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM unique_keys")?, 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM flow_slots")?, 0);
    assert_eq!(state_of(&conn, "a")?, "REVOKED");
    assert_eq!(state_of(&conn, "g")?, "REVOKED");
    assert_eq!(state_of(&conn, "any")?, "PENDING");
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM job_outbox WHERE job_id = 'any'"
        )?,
        1
    );
    let error: String =
        conn.query_row("SELECT error FROM jobs WHERE id = 'g'", [], |r| r.get(0))?;
    assert_eq!(error, "parent a ended REVOKED");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM job_ends")?, 0);
    Ok(())
}

/// A 'queued' key is released when its job starts, an 'unfinished' one not until it ends; a
/// step or a retry of a job that holds neither touches nothing.
#[tokio::test]
async fn keys_are_released_by_their_window() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    let conn = conn_to(&path)?;
    conn.execute_batch(
        "INSERT INTO jobs (id, task, queue, state) VALUES ('q', 't', 'q', 'PENDING'), \
         ('u', 't', 'q', 'PENDING'), ('n', 't', 'q', 'PENDING'); \
         INSERT INTO unique_keys VALUES ('kq', 'q', 'queued', 1), ('ku', 'u', 'unfinished', 1); \
         INSERT INTO flow_slots (job_id, gate, taken_ms) VALUES ('u', 'rate:t', 1); \
         UPDATE jobs SET state = 'RECEIVED'; UPDATE jobs SET state = 'STARTED';",
    )?;
    let keys = |conn: &Connection| -> rusqlite::Result<Vec<String>> {
        let mut st = conn.prepare("SELECT key FROM unique_keys ORDER BY key")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect()
    };
    assert_eq!(keys(&conn)?, ["ku"]);
    conn.execute_batch("UPDATE jobs SET state = 'deploy'; UPDATE jobs SET state = 'RETRY';")?;
    assert_eq!(keys(&conn)?, ["ku"]);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM flow_slots")?, 1);
    conn.execute_batch("UPDATE jobs SET state = 'SUCCESS'")?;
    assert!(keys(&conn)?.is_empty());
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM flow_slots")?, 0);
    Ok(())
}

/// A failure at the head of a chain of waiting jobs revokes the whole chain in its statement.
/// Each link nests two trigger frames (the thin trigger, then the release), and SQLite allows
/// 1000: chains up to 500 long. 400 here.
#[tokio::test]
async fn a_failure_revokes_a_chain_of_400() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, path) = temp_store()?;
    crate::store::Store::open(&StoreLocation::SqliteFile(path.clone())).await?;
    let mut conn = conn_to(&path)?;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO jobs (id, task, queue, state) VALUES ('c0', 't', 'q', 'STARTED')",
        [],
    )?;
    for i in 1..=400 {
        tx.execute(
            "INSERT INTO jobs (id, task, queue, state) VALUES (?1, 't', 'q', 'WAITING')",
            [format!("c{i}")],
        )?;
        tx.execute(
            "INSERT INTO job_edges (child, parent, mode) VALUES (?1, ?2, 'after')",
            [format!("c{i}"), format!("c{}", i - 1)],
        )?;
    }
    tx.commit()?;
    conn.execute("UPDATE jobs SET state = 'FAILURE' WHERE id = 'c0'", [])?;
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM jobs WHERE state = 'REVOKED'")?,
        400
    );
    Ok(())
}

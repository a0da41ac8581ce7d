//! The SQLite backend's own tests, by topic as its files are (what both backends share is
//! tested in `store/tests/`).

mod commit;
mod counts;
mod jobs;
mod migrations;
mod triggers;

use std::path::PathBuf;

use super::*;
use crate::store::batch;
use crate::store::{job_columns, Event, EventRow, JobRow, NewJob, StoreLocation, RECEIVED};

fn temp_store() -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.db");
    Ok((dir, path))
}

/// A store file with only the first `count` migrations applied, as an older cm left it.
fn migrated_to(path: &Path, count: usize) -> Result<Connection, rusqlite_migration::Error> {
    let mut conn = Connection::open(path)?;
    let before: Vec<_> = migrate::MIGRATIONS[..count]
        .iter()
        .map(|sql| rusqlite_migration::M::up(sql))
        .collect();
    rusqlite_migration::Migrations::new(before).to_latest(&mut conn)?;
    Ok(conn)
}

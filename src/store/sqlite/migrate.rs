//! Opening a store file, and its schema: the migrations in `migrations/`, applied in order by
//! rusqlite_migration, which records how many ran in the file's `PRAGMA user_version`.
//!
//! cm once migrated SQLite with sqlx, which records applied versions in a `_sqlx_migrations`
//! table instead. Such a file is adopted on first open: the versions sqlx applied (1..=N, each
//! successfully) become `user_version` N, and the migrations after N run as usual. The table
//! itself is left alone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

use super::{error, settings};
use crate::store::StoreError;

/// Creates the folder, takes the migrate lock, opens the file in WAL mode and migrates it.
/// Returns the connection, for the pool.
pub(super) fn open(path: &Path, busy: Duration, store: &str) -> Result<Connection, StoreError> {
    let unreachable = |cause: String| StoreError::Unreachable {
        store: store.to_string(),
        cause,
        fix: super::FIX,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| unreachable(format!("creating its folder {}: {e}", dir.display())))?;
    }
    let lock = Lock::take(path)
        .map_err(|e| unreachable(format!("taking {}: {e}", Lock::path(path).display())))?;
    let open = |conn: &Connection| -> rusqlite::Result<()> {
        settings(conn, busy)?;
        // WAL: readers never block the writer. The mode is the file's, kept once set.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("status store {store}: journal_mode is {mode}, not WAL");
        }
        Ok(())
    };
    let mut conn = Connection::open(path).map_err(|e| unreachable(e.to_string()))?;
    open(&conn).map_err(|e| match error(store, e) {
        StoreError::Backend { cause, .. } => unreachable(cause),
        busy => busy,
    })?;
    run(&mut conn).map_err(|cause| StoreError::Migration {
        store: store.to_string(),
        cause,
    })?;
    drop(lock);
    Ok(conn)
}

/// In order; a migration's version is its place in this list, from 1 (as its file name says).
pub(super) const MIGRATIONS: [&str; 17] = [
    include_str!("migrations/0001_jobs.sql"),
    include_str!("migrations/0002_jobs_state_submitted.sql"),
    include_str!("migrations/0003_job_events_later.sql"),
    include_str!("migrations/0004_output_leases_revokes.sql"),
    include_str!("migrations/0005_scheduled.sql"),
    include_str!("migrations/0006_job_counts.sql"),
    include_str!("migrations/0007_drop_jobs_finished.sql"),
    include_str!("migrations/0008_fewer_pages_per_commit.sql"),
    // 0009 and 0010 are PostgreSQL's alone: a version is its place in this list.
    include_str!("migrations/0012_schedules.sql"),
    // PostgreSQL's 0011, here after 0012: SQLite's version is the place in this list.
    include_str!("migrations/0011_workflows.sql"),
    // From here in the order they landed, whatever their numbers (PostgreSQL's order by name).
    include_str!("migrations/0016_queue_controls.sql"),
    include_str!("migrations/0015_unique_keys.sql"),
    include_str!("migrations/0014_flow_control.sql"),
    include_str!("migrations/0013_canvas.sql"),
    include_str!("migrations/0018_rate_overrides.sql"),
    // SQLite's alone (PostgreSQL's triggers are statement-level): no 0019 there.
    include_str!("migrations/0019_thin_triggers.sql"),
    include_str!("migrations/0020_throttled_keeps_queued_key.sql"),
];

/// Brings the schema up to date. The error is the cause, for [`StoreError::Migration`].
///
/// [`StoreError::Migration`]: crate::store::StoreError::Migration
pub(super) fn run(conn: &mut Connection) -> Result<(), String> {
    adopt_sqlx_versions(conn)?;
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
        .to_latest(conn)
        .map_err(|e| e.to_string())
}

/// Sets `user_version` from a `_sqlx_migrations` table, when the file has one and no version.
fn adopt_sqlx_versions(conn: &Connection) -> Result<(), String> {
    let fail = |e: rusqlite::Error| format!("reading the applied migrations: {e}");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    let sqlx_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(fail)?;
    if version != 0 || sqlx_table.is_none() {
        return Ok(());
    }
    let applied: Vec<(i64, bool)> = conn
        .prepare("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(fail)?;
    if let Some((v, _)) = applied.iter().find(|(_, ok)| !ok) {
        return Err(format!(
            "migration {v} failed part-way under an older cm (_sqlx_migrations says so); \
             restore a backup, or remove the file to start afresh"
        ));
    }
    let contiguous = applied
        .iter()
        .zip(1..)
        .all(|((version, _), expected)| *version == expected);
    let count = applied.len();
    if !contiguous || count > MIGRATIONS.len() {
        return Err(format!(
            "_sqlx_migrations lists versions {:?}, not 1 to {count} of this cm's {}",
            applied.iter().map(|(v, _)| v).collect::<Vec<_>>(),
            MIGRATIONS.len()
        ));
    }
    conn.pragma_update(None, "user_version", count as i64)
        .map_err(|e| format!("adopting the versions sqlx applied: {e}"))
}

/// `<db>.migrate-lock`, held (flock) while a process opens and migrates the file: four workers
/// starting at once would otherwise race to create the schema.
pub(super) struct Lock {
    _held: Flock<File>,
}

impl Lock {
    pub(super) fn path(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".migrate-lock");
        PathBuf::from(name)
    }

    /// Waits for the lock.
    pub(super) fn take(db: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::path(db))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|held| Lock { _held: held })
            .map_err(|(_, e)| e.into())
    }
}

//! What rusqlite's errors mean to a caller, as [`StoreError`]s.

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// What to check when an SQLite store cannot be opened.
pub(super) const FIX: &str = "check that the file and its folder are writable, or fix [store] url";

/// A busy database is one another connection holds locked past this one's busy timeout.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(super) fn error(store: &str, e: rusqlite::Error) -> StoreError {
    if is_busy(&e) {
        StoreError::Busy {
            store: store.to_string(),
            cause: e.to_string(),
        }
    } else if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
        // SQLite's unix VFS reports ENOSPC on the file or its WAL as SQLITE_FULL.
        StoreError::Full {
            store: store.to_string(),
            cause: e.to_string(),
        }
    } else {
        StoreError::Backend {
            store: store.to_string(),
            cause: e.to_string(),
        }
    }
}

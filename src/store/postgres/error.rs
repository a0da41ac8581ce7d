//! What sqlx's errors mean to a caller, as [`StoreError`]s.

use crate::store::StoreError;

/// What to check when the database cannot be reached.
pub(super) const FIX: &str = "start the database, or fix [store] url";

/// SQLSTATEs of a lock not had in time (55P03), a deadlock (40P01) and a serialization failure
/// (40001): the same work can succeed when tried again.
const BUSY_CODES: [&str; 3] = ["55P03", "40P01", "40001"];

/// SQLSTATE disk_full: the server could not extend a file.
const DISK_FULL: &str = "53100";

/// The database gone (class 08: connection exceptions; 57P01, 57P03: shut down, starting up).
fn is_connection_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

pub(super) fn error(store: &str, e: sqlx::Error) -> StoreError {
    let store = store.to_string();
    let code = match &e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    match (&e, code.as_deref()) {
        (
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed,
            _,
        ) => StoreError::Unreachable {
            store,
            cause: e.to_string(),
            fix: FIX,
        },
        (_, Some(c)) if is_connection_code(c) => StoreError::Unreachable {
            store,
            cause: e.to_string(),
            fix: FIX,
        },
        (_, Some(c)) if BUSY_CODES.contains(&c) => StoreError::Busy {
            store,
            cause: e.to_string(),
        },
        (_, Some(DISK_FULL)) => StoreError::Full {
            store,
            cause: e.to_string(),
        },
        _ => StoreError::Backend {
            store,
            cause: e.to_string(),
        },
    }
}

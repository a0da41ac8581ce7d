//! What sqlx's errors mean to a caller, as [`StoreError`]s.

use crate::store::StoreError;

/// What to check when the database cannot be reached.
pub(super) const FIX: &str = "start the database, or fix [store] url";

/// What to check when the URL's TLS cannot be had; [`tls_fix`] says it more precisely.
pub(super) const TLS_FIX: &str =
    "fix sslmode, sslrootcert, sslcert or sslkey in [store] url (docs/configuration.md)";

/// The fix for a TLS failure, by what failed; `None` if `e` is no TLS failure.
fn tls_fix(e: &sqlx::Error) -> Option<&'static str> {
    use tokio_rustls::rustls::{CertificateError, Error as Tls};
    let rustls = match e {
        sqlx::Error::Tls(inner) => inner.downcast_ref::<Tls>(),
        // The handshake's own failures come as I/O errors wrapping rustls's.
        sqlx::Error::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<Tls>()) {
            Some(t) => Some(t),
            None => return None,
        },
        _ => return None,
    };
    Some(match rustls {
        None if e.to_string().contains("does not support TLS") => {
            "the server offers no TLS: turn on ssl in its postgresql.conf, or lower sslmode in [store] url"
        }
        Some(Tls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            "its certificate does not name the URL's host: connect by a name it holds (sqlx 0.8 checks the name under verify-ca too)"
        }
        Some(Tls::InvalidCertificate(_)) => {
            "its certificate is not one cm trusts: set sslrootcert in [store] url to the CA that signed it"
        }
        Some(Tls::AlertReceived(_)) => {
            "the server refused the handshake: does it want a client certificate (sslcert, sslkey in [store] url)?"
        }
        _ => TLS_FIX,
    })
}

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
    // 28000 invalid_authorization_specification: pg_hba's clientcert wants what was not sent.
    let wants_certificate =
        code.as_deref() == Some("28000") && e.to_string().contains("certificate");
    let fix = if wants_certificate {
        Some("the server wants a client certificate: set sslcert and sslkey in [store] url to one its ssl_ca_file trusts")
    } else {
        tls_fix(&e)
    };
    if let Some(fix) = fix {
        return StoreError::Tls {
            store,
            cause: e.to_string(),
            fix,
        };
    }
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

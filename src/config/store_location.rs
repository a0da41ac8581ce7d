//! `[store] url`: parsed here once into where the status store is; nothing else reads the URL.

use std::path::{Path, PathBuf};

/// Where the status store is: `[store] url` parsed once, relative paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite://PATH`: a file (created with its folder on first use).
    SqliteFile(PathBuf),
    /// `sqlite::memory:`: a database that lives as long as the process's store does.
    SqliteMemory,
    /// `postgres://USER@HOST:5432/DB`, passed to the driver as written.
    Postgres(String),
}

const STORE_FORMS: &str = "expected sqlite://PATH (relative to the config file), \
    sqlite:///ABSOLUTE/PATH, sqlite::memory: or postgres://USER@HOST:5432/DB";

impl StoreLocation {
    /// Parses a store URL; a relative SQLite path resolves against `base`. The error says what
    /// is wrong and which forms are accepted.
    pub fn parse(url: &str, base: &Path) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            check_tls_params(url)?;
            return Ok(Self::Postgres(url.to_string()));
        }
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(format!(
                "unknown store {:?}: {STORE_FORMS}",
                crate::config::urls::redact(url)
            ));
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut memory = path == ":memory:";
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair {
                // What cm itself used to add: read, write, create.
                "mode=rwc" => {}
                "mode=memory" => memory = true,
                _ => {
                    return Err(format!(
                    "{url:?}: cm takes no SQLite option {pair:?} (only mode=memory): {STORE_FORMS}"
                ))
                }
            }
        }
        if memory {
            Ok(Self::SqliteMemory)
        } else if path.is_empty() {
            Err(format!("{url:?} names no file: {STORE_FORMS}"))
        } else {
            Ok(Self::SqliteFile(base.join(path)))
        }
    }
}

/// The sslmodes cm does as libpq does them; `allow` (plain first, TLS only if the server
/// insists) is refused rather than done differently.
const SSLMODES: [&str; 5] = ["disable", "prefer", "require", "verify-ca", "verify-full"];

/// A PostgreSQL URL's TLS parameters, as libpq reads them, are ones cm can honour: a known
/// sslmode, `sslcert` and `sslkey` together, `sslrootcert=system` only with verify-full.
fn check_tls_params(url: &str) -> Result<(), String> {
    let shown = crate::config::urls::redact(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("{shown}: {e}"))?;
    let param = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let mode = param("sslmode");
    if let Some(mode) = &mode {
        if !SSLMODES.contains(&mode.as_str()) {
            return Err(format!(
                "{shown}: sslmode={mode} is not one cm does: use {}",
                SSLMODES.join(", ")
            ));
        }
    }
    match (param("sslcert"), param("sslkey")) {
        (Some(_), None) => {
            return Err(format!(
                "{shown}: sslcert needs sslkey (its private key, PEM) beside it"
            ))
        }
        (None, Some(_)) => {
            return Err(format!(
                "{shown}: sslkey needs sslcert (the client certificate, PEM) beside it"
            ))
        }
        _ => {}
    }
    if param("sslrootcert").as_deref() == Some("system")
        && mode.as_deref().is_some_and(|m| m != "verify-full")
    {
        return Err(format!(
            "{shown}: sslrootcert=system needs sslmode=verify-full (as libpq: the system's CAs sign certificates for any host)"
        ));
    }
    Ok(())
}

/// The store as an operator would write it, with any password hidden.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SqliteFile(path) => write!(f, "sqlite://{}", path.display()),
            Self::SqliteMemory => f.write_str("sqlite::memory:"),
            Self::Postgres(url) => f.write_str(&crate::config::urls::redact(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_once_into_a_location() {
        let base = Path::new("/etc/cm");
        let parse = |url| StoreLocation::parse(url, base);
        let file = |p: &str| Ok(StoreLocation::SqliteFile(PathBuf::from(p)));
        assert_eq!(parse("sqlite://var/cm.db"), file("/etc/cm/var/cm.db"));
        assert_eq!(parse("sqlite:///srv/cm.db"), file("/srv/cm.db"));
        assert_eq!(
            parse("sqlite:var/cm.db?mode=rwc"),
            file("/etc/cm/var/cm.db")
        );
        assert_eq!(parse("sqlite::memory:"), Ok(StoreLocation::SqliteMemory));
        assert_eq!(
            parse("sqlite://x.db?mode=memory"),
            Ok(StoreLocation::SqliteMemory)
        );
        let pg = "postgres://cm:secret@db:5432/cm";
        assert_eq!(parse(pg), Ok(StoreLocation::Postgres(pg.into())));
        assert_eq!(
            parse(pg).map(|l| l.to_string()),
            Ok("postgres://cm:***@db:5432/cm".into())
        );
        for (bad, why) in [
            (
                "postgres://h/cm?sslmode=allow",
                "sslmode=allow is not one cm does",
            ),
            (
                "postgres://h/cm?sslmode=requir",
                "use disable, prefer, require",
            ),
            ("postgres://h/cm?sslcert=c.pem", "sslcert needs sslkey"),
            ("postgres://h/cm?sslkey=k.pem", "sslkey needs sslcert"),
            (
                "postgres://u:pw@h/cm?sslrootcert=system&sslmode=require",
                "needs sslmode=verify-full",
            ),
        ] {
            let msg = parse(bad).map(|_| ()).unwrap_err();
            assert!(msg.contains(why), "{bad}: {msg}");
            assert!(!msg.contains("pw"), "{msg}");
        }
        for good in [
            "postgres://h/cm?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=c&sslkey=k",
            "postgres://h/cm?sslrootcert=system",
            "postgresql://h/cm?sslmode=disable",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        for bad in [
            "mysql://u:pw@h/db",
            "sqlite://",
            "sqlite://x.db?mode=ro",
            "var/cm.db",
        ] {
            let msg = parse(bad).map(|_| ()).unwrap_err();
            assert!(msg.contains("sqlite::memory:"), "{bad}: {msg}");
            assert!(!msg.contains("pw"), "{msg}");
        }
    }
}

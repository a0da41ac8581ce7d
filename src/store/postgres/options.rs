//! A `postgres://` URL's connect options, its TLS parameters read as libpq reads them:
//! `sslrootcert=system` is the system's CAs (and makes verify-full the default), and
//! `sslmode=require` with a root certificate checks the chain as `verify-ca` does.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The options for `url`, or why they cannot be had: a file the URL names that cannot be
/// read, or a parameter sqlx refuses (the config check let through only known sslmodes).
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let param = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let system_roots = param("sslrootcert") == Some("system");
    if system_roots {
        // sqlx would read "system" as a file; without a root file it uses the system's CAs.
        let kept: Vec<_> = pairs.iter().filter(|(k, _)| k != "sslrootcert").collect();
        parsed.query_pairs_mut().clear().extend_pairs(kept);
        if param("sslmode").is_none() {
            parsed
                .query_pairs_mut()
                .append_pair("sslmode", "verify-full");
        }
    }
    for key in ["sslrootcert", "sslcert", "sslkey"] {
        match param(key) {
            Some(file) if !(key == "sslrootcert" && system_roots) => {
                std::fs::File::open(file).map_err(|e| format!("{key} {file}: {e}"))?;
            }
            _ => {}
        }
    }
    let mut options = PgConnectOptions::from_str(parsed.as_str()).map_err(|e| e.to_string())?;
    if param("sslmode") == Some("require") && param("sslrootcert").is_some() && !system_roots {
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgSslMode;

    use super::connect_options;

    #[test]
    fn tls_parameters_read_as_libpq_reads_them() -> Result<(), String> {
        let mode = |url: &str| connect_options(url).map(|o| o.get_ssl_mode());
        // libpq's default: TLS when the server offers it.
        assert!(matches!(mode("postgres://h/cm")?, PgSslMode::Prefer));
        assert!(matches!(
            mode("postgres://h/cm?sslrootcert=system")?,
            PgSslMode::VerifyFull
        ));
        let ca = "/etc/ssl/certs/ca-certificates.crt";
        if std::path::Path::new(ca).exists() {
            assert!(matches!(
                mode(&format!("postgres://h/cm?sslmode=require&sslrootcert={ca}"))?,
                PgSslMode::VerifyCa
            ));
        }
        let missing =
            connect_options("postgres://h/cm?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .map(|_| ())
                .unwrap_err();
        assert!(
            missing.starts_with("sslrootcert /nonexistent/ca.pem: "),
            "{missing}"
        );
        Ok(())
    }
}

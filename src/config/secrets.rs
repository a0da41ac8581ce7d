//! `[broker]`'s and `[store]`'s TLS and password keys: the broker's TLS files as paths (read
//! by `amqp::tls` when it first connects), and a `password_file`'s password put into the URL
//! in memory, so it is in no config file, argv or environment.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ConfigError;

/// How cm speaks TLS to the broker (`amqps://` URLs): whom it trusts and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    /// `[broker] ca_file`: the CAs (PEM) that may sign the broker's certificate, instead of
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `[broker] cert_file` and `key_file`: cm's client certificate (PEM) for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `[broker] verify_hostname` (default true): the certificate must name the URL's host.
    pub verify_hostname: bool,
}

impl Default for BrokerTls {
    fn default() -> Self {
        Self {
            ca_file: None,
            client: None,
            verify_hostname: true,
        }
    }
}

/// The `[broker]` TLS keys as written.
pub(super) struct RawTls<'a> {
    pub(super) ca_file: Option<&'a Spanned<PathBuf>>,
    pub(super) cert_file: Option<&'a Spanned<PathBuf>>,
    pub(super) key_file: Option<&'a Spanned<PathBuf>>,
    pub(super) verify_hostname: Option<&'a Spanned<bool>>,
}

type At<'a> = &'a dyn Fn(Option<Range<usize>>, String) -> ConfigError;

/// The TLS keys resolved beside the config file: the client certificate and key come as a
/// pair, and a TLS key with no `amqps://` URL is refused (it would protect nothing).
pub(super) fn broker_tls(
    raw: &RawTls<'_>,
    urls: &[String],
    base: &Path,
    at: At<'_>,
) -> Result<BrokerTls, ConfigError> {
    let resolve = |p: &Spanned<PathBuf>| {
        let p = p.get_ref();
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let client = match (raw.cert_file, raw.key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((resolve(cert), resolve(key))),
        (Some(cert), None) => return Err(at(
            Some(cert.span()),
            "broker.cert_file needs broker.key_file (the certificate's private key, PEM) beside it"
                .into(),
        )),
        (None, Some(key)) => {
            return Err(at(
                Some(key.span()),
                "broker.key_file needs broker.cert_file (the client certificate, PEM) beside it"
                    .into(),
            ))
        }
    };
    let tls = BrokerTls {
        ca_file: raw.ca_file.map(resolve),
        client,
        verify_hostname: raw.verify_hostname.is_none_or(|v| *v.get_ref()),
    };
    let any_key = [raw.ca_file, raw.cert_file, raw.key_file]
        .into_iter()
        .flatten()
        .map(|k| k.span())
        .chain(raw.verify_hostname.map(|v| v.span()))
        .next();
    if let Some(span) = any_key {
        if let Some(plain) = urls.iter().find(|u| !u.starts_with("amqps://")) {
            return Err(at(
                Some(span),
                format!(
                    "broker TLS keys are set but {} is not amqps://: write amqps://HOST:5671/VHOST to use TLS (a plain URL would send everything in clear)",
                    super::urls::redact(plain)
                ),
            ));
        }
    }
    Ok(tls)
}

/// Reads a `password_file`: its first line, without the line end. `key` names it in errors
/// (`broker.password_file`), never the password.
pub(super) fn read_password(
    file: &Spanned<PathBuf>,
    key: &str,
    base: &Path,
    at: At<'_>,
) -> Result<String, ConfigError> {
    let path = base.join(file.get_ref());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        at(
            Some(file.span()),
            format!(
                "{key} {}: {e} (it must be readable by the user cm runs as)",
                path.display()
            ),
        )
    })?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        return Err(at(
            Some(file.span()),
            format!(
                "{key} {}: its first line is empty (it must hold the password)",
                path.display()
            ),
        ));
    }
    Ok(password.to_string())
}

/// `url` with `password` in it. The URL must name a user and hold no password of its own:
/// two passwords for one login would leave it unclear which one is used.
pub(super) fn with_password(url: &str, password: &str, key: &str) -> Result<String, String> {
    let shown = super::urls::redact(url);
    let mut parsed = url::Url::parse(url).map_err(|e| format!("{shown}: {e}"))?;
    if parsed.username().is_empty() {
        return Err(format!(
            "{key} is set but {shown} names no user: write SCHEME://USER@HOST/..."
        ));
    }
    if parsed.password().is_some() {
        return Err(format!(
            "{key} is set but {shown} has a password too: remove it from the URL"
        ));
    }
    parsed
        .set_password(Some(password))
        .map_err(|()| format!("{shown} cannot hold a password"))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{with_password, BrokerTls};
    use crate::config::{Config, ConfigError};

    const QUEUES: &str = "[queues.q]\nworkers = \"w1\"\ntasks = [\"cm.launch\"]\n";

    fn parse_in(dir: &Path, broker: &str, store: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &dir.join("fabfile.toml"),
            &format!("[broker]\n{broker}\n[store]\n{store}\n{QUEUES}"),
        )
    }

    fn parse(broker: &str) -> Result<Config, ConfigError> {
        parse_in(Path::new("/etc/cm"), broker, "")
    }

    #[test]
    fn tls_keys_resolve_beside_the_file_come_in_pairs_and_need_amqps() -> Result<(), ConfigError> {
        let amqps = "url = \"amqps://h/%2f\"";
        assert_eq!(parse(amqps)?.broker_tls, BrokerTls::default());
        let all = parse(&format!(
            "{amqps}\nca_file = \"ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"k.pem\"\nverify_hostname = false"
        ))?;
        assert_eq!(
            all.broker_tls,
            BrokerTls {
                ca_file: Some(PathBuf::from("/etc/cm/ca.pem")),
                client: Some(("/c.pem".into(), "/etc/cm/k.pem".into())),
                verify_hostname: false,
            }
        );
        for (broker, why) in [
            (
                format!("{amqps}\ncert_file = \"c.pem\""),
                "needs broker.key_file",
            ),
            (
                format!("{amqps}\nkey_file = \"k.pem\""),
                "needs broker.cert_file",
            ),
            (
                "url = [\"amqps://a/%2f\", \"amqp://u:pw@b/%2f\"]\nca_file = \"ca.pem\"".into(),
                "amqp://u:***@b/%2f is not amqps://",
            ),
            (
                "url = \"amqp://h/%2f\"\nverify_hostname = false".into(),
                "is not amqps://",
            ),
        ] {
            let msg = parse(&broker).map(|_| ()).unwrap_err().to_string();
            assert!(msg.contains(why), "{broker}: {msg}");
            assert!(msg.starts_with("/etc/cm/fabfile.toml:"), "{msg}");
        }
        Ok(())
    }

    #[test]
    fn password_files_fill_the_urls_in_memory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("pw"), "s3cr;et\nnot this line\n")?;
        std::fs::write(dir.path().join("empty"), "\n")?;
        let cfg = parse_in(
            dir.path(),
            "url = \"amqp://cm@a/%2f;amqp://cm@b/%2f\"\npassword_file = \"pw\"",
            "url = \"postgres://cm@db/cm\"\npassword_file = \"pw\"",
        )?;
        assert_eq!(
            cfg.broker_url,
            "amqp://cm:s3cr%3Bet@a/%2f;amqp://cm:s3cr%3Bet@b/%2f"
        );
        let uri: lapin::uri::AMQPUri = cfg
            .broker_url
            .split(";amqp")
            .next()
            .unwrap_or_default()
            .parse()?;
        assert_eq!(uri.authority.userinfo.password, "s3cr;et");
        assert_eq!(cfg.store_url.to_string(), "postgres://cm:***@db/cm");
        for (broker, store, why) in [
            ("password_file = \"empty\"", "", "its first line is empty"),
            ("password_file = \"missing\"", "", "broker.password_file"),
            (
                "",
                "url = \"postgres://cm:0ldpw@db/cm\"\npassword_file = \"pw\"",
                "has a password too",
            ),
        ] {
            let msg = parse_in(dir.path(), broker, store)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(why), "{broker} {store}: {msg}");
            assert!(!msg.contains("s3cr") && !msg.contains("0ldpw"), "{msg}");
        }
        Ok(())
    }

    #[test]
    fn a_password_goes_into_a_url_that_names_a_user_and_has_none() {
        assert_eq!(
            with_password("amqps://cm@h:5671/%2f", "p@ss;w/rd", "k").as_deref(),
            Ok("amqps://cm:p%40ss%3Bw%2Frd@h:5671/%2f")
        );
        assert_eq!(
            with_password("postgres://cm@db/cm?sslmode=verify-full", "pw", "k").as_deref(),
            Ok("postgres://cm:pw@db/cm?sslmode=verify-full")
        );
        for (url, why) in [
            ("amqps://h:5671/%2f", "names no user"),
            ("amqps://cm:0ldpw@h/%2f", "has a password too"),
        ] {
            let msg = with_password(url, "secret", "broker.password_file").unwrap_err();
            assert!(msg.contains(why), "{msg}");
            assert!(msg.starts_with("broker.password_file"), "{msg}");
            assert!(!msg.contains("0ldpw") && !msg.contains("secret"), "{msg}");
        }
    }
}

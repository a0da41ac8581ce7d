//! `[web]` keys that need more than a default: the HTTPS certificate and key.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::raw::RawWeb;
use super::ConfigError;

/// The PEM files the web serves HTTPS with; read (and checked) when the web starts, not here,
/// so a command that never starts the web does not fail on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Both keys or neither; relative paths are resolved against the config file's folder.
pub(super) fn tls(
    raw: &RawWeb,
    base: &Path,
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
) -> Result<Option<WebTls>, ConfigError> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(WebTls {
            cert: resolve(cert.get_ref()),
            key: resolve(key.get_ref()),
        })),
        (Some(cert), None) => Err(at(
            Some(cert.span()),
            "web.tls_cert needs web.tls_key (the certificate's private key, PEM) beside it".into(),
        )),
        (None, Some(key)) => Err(at(
            Some(key.span()),
            "web.tls_key needs web.tls_cert (the certificate chain, PEM) beside it".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::WebTls;
    use crate::config::{Config, ConfigError};

    const QUEUES: &str = "[queues.q]\nworkers = \"w1\"\ntasks = [\"cm.launch\"]\n";

    fn parse(web: &str) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("/etc/cm/fabfile.toml"),
            &format!("{QUEUES}[web]\n{web}"),
        )
    }

    #[test]
    fn tls_paths_resolve_beside_the_file_and_come_in_pairs() -> Result<(), ConfigError> {
        assert_eq!(parse("")?.web_tls, None);
        let both = parse("tls_cert = \"tls/cert.pem\"\ntls_key = \"/srv/key.pem\"\n")?;
        assert_eq!(
            both.web_tls,
            Some(WebTls {
                cert: "/etc/cm/tls/cert.pem".into(),
                key: "/srv/key.pem".into(),
            })
        );
        for (alone, missing) in [
            ("tls_cert = \"c.pem\"", "needs web.tls_key"),
            ("tls_key = \"k.pem\"", "needs web.tls_cert"),
        ] {
            let msg = parse(alone).map(|_| ()).unwrap_err().to_string();
            assert!(msg.contains(missing), "{msg}");
            assert!(msg.starts_with("/etc/cm/fabfile.toml:5:"), "{msg}");
        }
        Ok(())
    }
}

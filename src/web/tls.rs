//! HTTPS from `[web] tls_cert` and `tls_key` (PEM), with rustls (ring): read and checked once
//! by the starter before the web detaches, and again by the server that uses them. Any failure
//! is one line naming the file, and a configuration error (exit 78).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{Error, InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, WebTls};

/// The acceptor for `[web] tls_cert`/`tls_key`, or `None` when the web serves plain HTTP.
pub fn acceptor(cfg: &Config) -> Result<Option<TlsAcceptor>, ConfigError> {
    let Some(files) = &cfg.web_tls else {
        return Ok(None);
    };
    let rule = |message: String| ConfigError::Rule {
        path: cfg.path.clone(),
        message,
    };
    server_config(files)
        .map(|c| Some(TlsAcceptor::from(Arc::new(c))))
        .map_err(rule)
}

fn server_config(files: &WebTls) -> Result<ServerConfig, String> {
    let (cert, key) = (files.cert.as_path(), files.key.as_path());
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let why = pem_reason(
            &e,
            "no private key in it (expected PEM, -----BEGIN PRIVATE KEY-----)",
        );
        format!("[web] tls_key {}: {why}", key.display())
    })?;
    // ring, not rustls's default aws-lc-rs: that one's large C build is the price of the
    // post-quantum key exchange ring lacks (hence deprecated), not worth it for this console.
    // Its own provider: nothing process-wide to install.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for the web: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                "[web] tls_key {} is not the key of tls_cert {}",
                key.display(),
                cert.display()
            ),
            other => format!(
                "[web] tls_key {} cannot serve tls_cert {}: {other}",
                key.display(),
                cert.display()
            ),
        })?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    const NONE: &str = "no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)";
    let bad = |why: String| format!("[web] tls_cert {}: {why}", cert.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(pem_reason(&e, NONE)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e, NONE)))?;
    if chain.is_empty() {
        return Err(bad(NONE.into()));
    }
    Ok(chain)
}

/// The reason without the type's own wrapping: an I/O error says what the OS said.
fn pem_reason(e: &pem::Error, nothing_found: &str) -> String {
    match e {
        pem::Error::Io(io) => format!("cannot be read: {io}"),
        pem::Error::NoItemsFound => nothing_found.into(),
        other => format!("not valid PEM: {other}"),
    }
}

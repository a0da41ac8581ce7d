//! HTTPS from `[web] tls_cert` and `tls_key` (PEM), with rustls (ring): read and checked once
//! by the starter before the web detaches, and again by the server that uses them. Any failure
//! is one line naming the file, and a configuration error (exit 78).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
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
        format!(
            "[web] tls_key {}: no private key read ({}): it must be a PEM private key",
            key.display(),
            pem_reason(&e)
        )
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
        .map_err(|e| {
            format!(
                "[web] tls_key {} does not go with tls_cert {} ({e})",
                key.display(),
                cert.display()
            )
        })?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| format!("[web] tls_cert {}: {why}", cert.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(chain)
}

/// The reason without the type's own wrapping: an I/O error says what the OS said.
fn pem_reason(e: &tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot be read: {io}"),
        Error::NoItemsFound => "nothing of that kind in it".into(),
        other => format!("not valid PEM: {other}"),
    }
}

//! `amqps://` with rustls on ring: whom cm trusts (`[broker] ca_file`, else the system's roots
//! through rustls-native-certs), its client certificate for mutual TLS, the host check and its
//! opt-out; the TLS stream lapin runs AMQP over; and what a failed handshake means to an
//! operator.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};

use crate::config::BrokerTls;

/// The connector for `tls`: read once per process, on its first `amqps://` connect. The
/// error names the key and file at fault.
pub(super) fn connector(tls: &BrokerTls) -> Result<RustlsConnector, String> {
    // ring, as the web's HTTPS: aws-lc-rs would need cmake and a C build.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let roots = Arc::new(match &tls.ca_file {
        Some(file) => roots_from(file)?,
        None => system_roots()?,
    });
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("broker TLS: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("broker TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(if tls.verify_hostname {
            verifier
        } else {
            Arc::new(AnyHostOfTheCa(verifier))
        });
    let config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert, "broker.cert_file")?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "broker.key_file {}: {e} (expected a PEM private key)",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "broker.key_file {} cannot serve broker.cert_file {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
    };
    Ok(RustlsConnector::from(Arc::new(config)))
}

fn certificates(file: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| format!("{key} {}: {why}", file.display());
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn roots_from(file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file, "broker.ca_file")? {
        roots
            .add(cert)
            .map_err(|e| format!("broker.ca_file {}: {e}", file.display()))?;
    }
    Ok(roots)
}

/// The system's CAs: the OS store, or `SSL_CERT_FILE` / `SSL_CERT_DIR` where set.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(format!(
            "broker TLS: no system CA certificates ({why}): install ca-certificates, or set [broker] ca_file to the broker's CA"
        ));
    }
    Ok(roots)
}

/// `verify_hostname = false`: the chain must still lead to a trusted CA, but the certificate
/// may name any host. What that gives up: anyone holding a certificate of that CA, for any
/// name, can pose as the broker.
#[derive(Debug)]
struct AnyHostOfTheCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostOfTheCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS handshake that failed, told apart from a TCP connect that did.
#[derive(Debug)]
struct HandshakeFailed(io::Error);

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake: {}", self.0)
    }
}

impl std::error::Error for HandshakeFailed {}

/// The connection ended right after a TLS handshake that succeeded: under TLS 1.3 that is how
/// a broker's refusal of cm's client certificate (or of its lack of one) often arrives, as a
/// reset before its alert can be read.
#[derive(Debug)]
struct ClosedAfterHandshake(String);

impl fmt::Display for ClosedAfterHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closed right after the TLS handshake: {}", self.0)
    }
}

impl std::error::Error for ClosedAfterHandshake {}

/// AMQP over TLS to `url` (`amqps://`): TCP, then the handshake with `connector`, then AMQP.
/// Reconnects by lapin (none are asked) would take the same way.
pub(super) async fn connect(
    url: &str,
    props: ConnectionProperties,
    connector: Arc<RustlsConnector>,
) -> lapin::Result<Connection> {
    let uri: AMQPUri = url
        .parse()
        .map_err(|e: String| lapin::Error::from(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let runtime = lapin::runtime::default_runtime()?;
    let handshaken = Arc::new(AtomicBool::new(false));
    let seen = handshaken.clone();
    let connected = Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let mut tcp = uri;
            tcp.scheme = AMQPScheme::AMQP;
            let plain = AMQPUriTcpExt::connect_async(&tcp, &runtime).await?;
            let secured = plain
                .into_rustls(&connector, &host)
                .await
                .map_err(|e| io::Error::new(e.kind(), HandshakeFailed(e)))?;
            seen.store(true, Ordering::Relaxed);
            Ok(secured)
        },
        props,
    )
    .await;
    connected.map_err(|e| match e.kind() {
        lapin::ErrorKind::IOError(io)
            if handshaken.load(Ordering::Relaxed)
                && matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) =>
        {
            io::Error::new(io.kind(), ClosedAfterHandshake(io.to_string())).into()
        }
        _ => e,
    })
}

/// What a failed `amqps://` connect means and what fixes it, or `None` when TLS had no part
/// in it (no answer at the port, a refused login).
pub(super) fn failure(e: &lapin::Error) -> Option<(String, &'static str)> {
    let lapin::ErrorKind::IOError(io) = e.kind() else {
        return None;
    };
    if let Some(closed) = io
        .get_ref()
        .and_then(|i| i.downcast_ref::<ClosedAfterHandshake>())
    {
        return Some((
            closed.to_string(),
            "the broker did not take cm's client certificate: set [broker] cert_file and key_file to one its CA signed (or check the broker's log: it may have refused the login)",
        ));
    }
    let handshake = io
        .get_ref()
        .and_then(|i| i.downcast_ref::<HandshakeFailed>());
    let rustls = match handshake {
        Some(h) => h.0.get_ref().and_then(|i| i.downcast_ref::<TlsError>()),
        // A refusal of cm's client certificate comes after TLS 1.3's handshake, on the first read.
        None => Some(io.get_ref()?.downcast_ref::<TlsError>()?),
    };
    let reason = handshake.map_or_else(|| io.to_string(), |h| h.0.to_string());
    let fix = match rustls {
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "its certificate does not name the URL's host: connect by a name the certificate holds, or set [broker] verify_hostname = false (then any certificate of the trusted CA is taken)",
        Some(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "its certificate is not signed by a CA cm trusts: set [broker] ca_file to the CA that signed it",
        Some(TlsError::InvalidCertificate(_)) => {
            "its certificate is not valid (expired, not yet valid, or revoked): renew it on the broker"
        }
        Some(TlsError::AlertReceived(_)) => {
            "the broker refused the handshake: if it asks for a client certificate, set [broker] cert_file and key_file to one its CA signed"
        }
        Some(TlsError::InvalidMessage(_)) | None => {
            "the port does not speak TLS (a plain AMQP listener?): use the broker's TLS port (5671 by default), or amqp:// where no TLS is wanted"
        }
        Some(_) => "check the broker's TLS listener and [broker] ca_file, cert_file, key_file",
    };
    Some((reason, fix))
}

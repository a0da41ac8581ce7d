//! The headers every response carries: no framing (db_reset cannot be clickjacked), scripts
//! and styles from this server's own files only (no inline script runs, injected or not), no
//! content sniffing, no referrer beyond this origin, and pages kept out of shared caches;
//! under HTTPS, a browser that has seen the site once never tries it in plain HTTP again.

use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// Everything from this origin's files; nothing inline, nothing framed, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub async fn secure(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages hold form tokens and jobs' arguments; the static files say their own.
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A year, the value browsers' preload lists ask for. No `includeSubDomains`: other services
/// on the operator's domain are not cm's to force onto HTTPS.
pub const HSTS: &str = "max-age=31536000";

/// Only where cm serves HTTPS itself (`[web] tls_cert`): over plain HTTP browsers ignore the
/// header, and behind a proxy that ends TLS it is the proxy's to send.
pub async fn strict_transport(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    resp
}

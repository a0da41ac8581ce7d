//! The accept loop: each connection served by hyper (HTTP/1.1), over TLS when configured, with
//! a deadline on the request head and the TLS handshake, until shutdown.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::REQUEST_TIMEOUT;

/// Accepts until `shutdown`, then lets requests in flight finish (within the request timeout).
/// Not `axum::serve`: it sets no timer, so a client that never finishes its request headers
/// would hold its connection forever; here it is dropped after the request timeout too.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // HTTP/1.1 only, over TLS too: the pages make few requests, and one stack is less to audit.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_one(stream, &builder, app, watcher).await,
                Some(acceptor) => {
                    // A client that never finishes its handshake is dropped like a slow head.
                    match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serve_one(tls_stream, &builder, app, watcher).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!("TLS handshake: no end within the timeout"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; closing them");
    }
}

async fn serve_one<IO>(
    io: IO,
    builder: &hyper::server::conn::http1::Builder,
    app: Router,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection: {e}");
    }
}

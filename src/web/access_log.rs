//! One line per request on the web's stderr (`cm-web.log` when detached): the time, method,
//! path, status, the token's name (or `-`) and milliseconds. Not the query string: a link may
//! carry a secret in it. Written whole in one write, whatever `RUST_LOG` says.

use std::io::Write;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::session::Who;

/// A path longer than this is cut in the log (the request line limit allows far more).
const MAX_PATH: usize = 256;

pub async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path();
    let path = match path.char_indices().nth(MAX_PATH) {
        Some((at, _)) => format!("{}…", &path[..at]),
        None => path.to_string(),
    };
    let resp = next.run(req).await;
    let who = resp.extensions().get::<Who>().map_or("-", |w| w.0);
    let line = format!(
        "{} access {method} {path} {} {who} {}ms\n",
        now(),
        resp.status().as_u16(),
        start.elapsed().as_millis()
    );
    // A log that cannot be written to must not fail the request.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    resp
}

/// UTC, to the millisecond.
fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

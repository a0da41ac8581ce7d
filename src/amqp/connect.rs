//! A connection to the first node of the broker list that answers, beginning with the one
//! reached last, and which node that is for status lines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties, ErrorKind};

use super::BrokerError;
use crate::config::urls::{redact, split_urls};

/// A blackholed host must not hang `cm queue start`; a live broker answers well within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeats let a worker see a dead broker (or a cut link) within ~2x this, instead of
/// stalling silently.
pub const HEARTBEAT_SECONDS: u16 = 10;
/// lapin keeps 32 frames of buffer each way, zero-filled: at RabbitMQ's default 128 KiB frames
/// that is 8 MiB per process. Job messages are well under 1 KiB; 8 KiB frames keep it at 512 KiB.
const FRAME_MAX: u32 = 8192;

/// The URL with cm's connection tuning added; a `heartbeat=` or `frame_max=` in the configured
/// URL wins.
fn tuned(url: &str) -> String {
    let mut url = url.to_string();
    for (key, value) in [
        ("heartbeat", u32::from(HEARTBEAT_SECONDS)),
        ("frame_max", FRAME_MAX),
    ] {
        if !url.contains(&format!("{key}=")) {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}{key}={value}");
        }
    }
    url
}

/// Which URL of the list this process reached last: the next connect tries it first, the
/// next after a loss (`lost`) tries the one after it first.
static PREFERRED: AtomicUsize = AtomicUsize::new(0);

/// Connects to the first node of `urls` (a `;`-separated list, or one URL) that answers,
/// beginning with the one reached last; the connection is named so `rabbitmqctl
/// list_connections` shows who it is. With every node refusing, the error is the last one's.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, BrokerError> {
    let list = split_urls(urls);
    let first = PREFERRED.load(Ordering::Relaxed);
    let mut last_error = None;
    for k in 0..list.len().max(1) {
        let i = (first + k) % list.len().max(1);
        let Some(url) = list.get(i) else { break };
        match connect_one(url, name).await {
            Ok(conn) => {
                PREFERRED.store(i, Ordering::Relaxed);
                CONNECTED.store(true, Ordering::Relaxed);
                if k > 0 {
                    tracing::info!("connected to {} (of {} nodes)", redact(url), list.len());
                }
                return Ok(conn);
            }
            Err(e) => {
                if list.len() > 1 {
                    tracing::warn!("{e}; trying the next node");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| BrokerError::Unreachable {
        url: String::new(),
        reason: "no broker URL configured".into(),
    }))
}

/// Whether this process's connection to the node reached last is up: set by `connect`,
/// cleared by `lost`. Without it a worker between connections showed the node it would try
/// next as its node (seen in the cluster tests: "another node" 80 ms after its node stopped,
/// before any reconnect).
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// The connection to the node reached last was lost: the next connect tries another first.
pub fn lost() {
    CONNECTED.store(false, Ordering::Relaxed);
    PREFERRED.fetch_add(1, Ordering::Relaxed);
}

/// The node of the list this process is connected to (redacted), for status lines; `None`
/// while a lost connection is not yet replaced.
pub fn connected_node(urls: &str) -> Option<String> {
    CONNECTED
        .load(Ordering::Relaxed)
        .then(|| current_node(urls))
}

/// The node of the list this process reached last (redacted), for status lines.
pub fn current_node(urls: &str) -> String {
    let list = split_urls(urls);
    list.get(PREFERRED.load(Ordering::Relaxed) % list.len().max(1))
        .map(|u| redact(u))
        .unwrap_or_default()
}

async fn connect_one(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let shown = redact(url);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let url = tuned(url);
    let result = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, props)).await;
    match result {
        Err(_) => Err(BrokerError::Unreachable {
            url: shown,
            reason: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(classify(&shown, e)),
    }
}

fn classify(url: &str, e: lapin::Error) -> BrokerError {
    let url = url.to_string();
    let text = e.to_string();
    match e.kind() {
        ErrorKind::IOError(io) => BrokerError::Unreachable {
            url,
            reason: io.to_string(),
        },
        ErrorKind::ProtocolError(_) if text.contains("ACCESS_REFUSED") => {
            BrokerError::AccessRefused { url, reason: text }
        }
        ErrorKind::ProtocolError(_) if text.contains("NOT_ALLOWED") => {
            BrokerError::VhostRefused { url, reason: text }
        }
        // RabbitMQ drops the socket on a bad login before AMQP 0-9-1 can say why.
        ErrorKind::InvalidConnectionState(_) => BrokerError::AccessRefused {
            url,
            reason: format!("connection closed during login ({text})"),
        },
        _ => BrokerError::Protocol {
            url,
            context: "connecting".into(),
            cause: e,
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tuning_is_added_unless_the_url_sets_it() {
        assert_eq!(
            super::tuned("amqp://h/%2f"),
            "amqp://h/%2f?heartbeat=10&frame_max=8192"
        );
        assert_eq!(
            super::tuned("amqp://h/?heartbeat=3"),
            "amqp://h/?heartbeat=3&frame_max=8192"
        );
    }
}

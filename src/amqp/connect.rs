//! The broker list as a value ([`Brokers`]): a connection to the first node that answers,
//! beginning with the one reached last, and which node that is for status lines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lapin::tcp::RustlsConnector;
use lapin::{Connection, ConnectionProperties, ErrorKind};

use super::{tls, BrokerError};
use crate::config::urls::{redact, split_urls};
use crate::config::{BrokerTls, Config};

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

/// The broker's nodes (`[broker] url`: one URL or a `;`-separated list) and this process's way
/// through them: which node was reached last, and whether that connection is up. Built once
/// from the config; clones share the way, so every connection of a process fails over alike.
/// No `Debug`: the URLs hold passwords.
#[derive(Clone)]
pub struct Brokers {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<String>,
    /// Which URL of the list was reached last: the next connect tries it first, the next after
    /// a loss ([`Brokers::lost`]) tries the one after it first.
    preferred: AtomicUsize,
    /// Whether the connection to the node reached last is up: set by a connect, cleared by
    /// [`Brokers::lost`]. Without it a worker between connections showed the node it would try
    /// next as its node (seen in the cluster tests: "another node" as soon as its node stopped,
    /// before any reconnect).
    connected: AtomicBool,
    /// How `amqps://` nodes are spoken to (`[broker]`'s TLS keys).
    tls: BrokerTls,
    /// Built from `tls` on the first `amqps://` connect, then shared by every connection.
    connector: OnceLock<Result<Arc<RustlsConnector>, String>>,
}

impl Brokers {
    /// The nodes of `urls` (a `;`-separated list, or one URL), none reached yet; `amqps://`
    /// ones trust the system's CAs and check the host.
    pub fn new(urls: &str) -> Self {
        Self::with_tls(urls, BrokerTls::default())
    }

    /// The broker of `cfg`: its URLs (password included) and its TLS keys.
    pub fn of(cfg: &Config) -> Self {
        Self::with_tls(&cfg.broker_url, cfg.broker_tls.clone())
    }

    fn with_tls(urls: &str, tls: BrokerTls) -> Self {
        Self {
            inner: Arc::new(Inner {
                urls: split_urls(urls),
                preferred: AtomicUsize::new(0),
                connected: AtomicBool::new(false),
                tls,
                connector: OnceLock::new(),
            }),
        }
    }

    /// The TLS connector for `amqps://` nodes, made once; the error names the file at fault.
    fn connector(&self) -> Result<Arc<RustlsConnector>, String> {
        self.inner
            .connector
            .get_or_init(|| tls::connector(&self.inner.tls).map(Arc::new))
            .clone()
    }

    /// Connects to the first node that answers, beginning with the one reached last; the
    /// connection is named so `rabbitmqctl list_connections` shows who it is. With every node
    /// refusing, the error is the last one's.
    pub async fn connect(&self, name: &str) -> Result<Connection, BrokerError> {
        let urls = &self.inner.urls;
        let mut last_error = None;
        for (k, i) in self.order().enumerate() {
            let Some(url) = urls.get(i) else { break };
            let connector = if url.starts_with("amqps://") {
                Some(
                    self.connector()
                        .map_err(|reason| BrokerError::TlsSetup { reason })?,
                )
            } else {
                None
            };
            match connect_one(url, name, connector).await {
                Ok(conn) => {
                    self.reached(i);
                    if k > 0 {
                        tracing::info!("connected to {} (of {} nodes)", redact(url), urls.len());
                    }
                    return Ok(conn);
                }
                Err(e) => {
                    if urls.len() > 1 {
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

    /// The connection to the node reached last was lost: the next connect tries another first.
    pub fn lost(&self) {
        self.inner.connected.store(false, Ordering::Relaxed);
        self.inner.preferred.fetch_add(1, Ordering::Relaxed);
    }

    /// The node connected to (redacted), for status lines; `None` before the first connect and
    /// while a lost connection is not yet replaced.
    pub fn connected_node(&self) -> Option<String> {
        self.inner
            .connected
            .load(Ordering::Relaxed)
            .then(|| self.current_node())
    }

    /// The node reached last (redacted), or after a loss the one the next connect tries first:
    /// the node a connection just made is on, for its errors.
    pub fn current_node(&self) -> String {
        self.inner
            .urls
            .get(self.first())
            .map(|u| redact(u))
            .unwrap_or_default()
    }

    /// Where the next connect begins.
    fn first(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed) % self.inner.urls.len().max(1)
    }

    /// The list's indexes in the order the next connect tries them.
    fn order(&self) -> impl Iterator<Item = usize> {
        let n = self.inner.urls.len();
        let first = self.first();
        (0..n).map(move |k| (first + k) % n)
    }

    /// Node `i` answered: it is the one to try first from now on.
    fn reached(&self, i: usize) {
        self.inner.preferred.store(i, Ordering::Relaxed);
        self.inner.connected.store(true, Ordering::Relaxed);
    }
}

/// Connects to one node; `connector` is given for an `amqps://` one, which never falls back
/// to plain AMQP.
async fn connect_one(
    url: &str,
    name: &str,
    connector: Option<Arc<RustlsConnector>>,
) -> Result<Connection, BrokerError> {
    let shown = redact(url);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let url = tuned(url);
    let connecting = async {
        match connector {
            Some(connector) => tls::connect(&url, props, connector).await,
            None => Connection::connect(&url, props).await,
        }
    };
    let result = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await;
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
    if let Some((reason, fix)) = tls::failure(&e) {
        return BrokerError::Tls { url, reason, fix };
    }
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
    use super::Brokers;

    fn order(brokers: &Brokers) -> Vec<usize> {
        brokers.order().collect()
    }

    /// A URL of this host where nothing listens: connecting to it is refused at once.
    fn dead_url() -> Result<String, std::io::Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
    }

    #[test]
    fn a_lost_node_is_tried_last_and_status_shows_no_node_until_the_next_connect() {
        let brokers = Brokers::new("amqp://u:pw@a/v;amqp://b/v;amqp://c/v");
        assert_eq!(order(&brokers), [0, 1, 2]);
        assert_eq!(brokers.connected_node(), None, "nothing reached yet");
        assert_eq!(brokers.current_node(), "amqp://u:***@a/v");

        brokers.reached(1);
        assert_eq!(brokers.connected_node().as_deref(), Some("amqp://b/v"));
        assert_eq!(order(&brokers), [1, 2, 0], "the node reached first again");

        brokers.lost();
        assert_eq!(brokers.connected_node(), None, "between connections");
        assert_eq!(brokers.current_node(), "amqp://c/v", "the one tried next");
        assert_eq!(order(&brokers), [2, 0, 1]);

        brokers.reached(2);
        brokers.lost();
        assert_eq!(order(&brokers), [0, 1, 2], "past the end of the list");
    }

    #[test]
    fn clones_share_the_way_through_the_list() {
        let brokers = Brokers::new("amqp://a;amqp://b");
        let other = brokers.clone();
        brokers.reached(0);
        assert_eq!(other.connected_node().as_deref(), Some("amqp://a"));
        other.lost();
        assert_eq!(brokers.connected_node(), None);
        assert_eq!(order(&brokers), [1, 0]);
        assert_eq!(
            order(&Brokers::new("amqp://a;amqp://b")),
            [0, 1],
            "a new list starts over"
        );
    }

    #[test]
    fn one_url_is_always_the_one() {
        let brokers = Brokers::new("amqp://a");
        brokers.lost();
        assert_eq!(order(&brokers), [0]);
        assert_eq!(brokers.current_node(), "amqp://a");
        assert!(order(&Brokers::new("")).is_empty());
    }

    /// Against the test broker: a dead node first in the list is passed over, and after a loss
    /// the dead one is tried first again, then the live one is connected to again.
    #[tokio::test]
    async fn connect_passes_over_a_dead_node_and_comes_back_after_a_loss(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let live = crate::amqp::TEST_BROKER_URL;
        let brokers = Brokers::new(&format!("{};{live}", dead_url()?));
        let shown = crate::config::urls::redact(live);
        let conn = brokers.connect("cm unit test").await?;
        assert_eq!(brokers.connected_node(), Some(shown.clone()));
        conn.close(200, "done".into()).await?;

        brokers.lost();
        assert_eq!(brokers.connected_node(), None);
        assert_ne!(
            brokers.current_node(),
            shown,
            "the dead node is tried first"
        );
        let conn = brokers.connect("cm unit test").await?;
        assert_eq!(brokers.connected_node(), Some(shown));
        conn.close(200, "done".into()).await?;

        let err = Brokers::new(&dead_url()?).connect("cm unit test").await;
        assert!(
            matches!(err, Err(super::BrokerError::Unreachable { .. })),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn tuning_is_added_unless_the_url_sets_it() {
        for (url, tuned) in [
            ("amqp://h/%2f", "amqp://h/%2f?heartbeat=10&frame_max=8192"),
            (
                "amqp://h/?heartbeat=3",
                "amqp://h/?heartbeat=3&frame_max=8192",
            ),
        ] {
            assert_eq!(super::tuned(url), tuned, "{url}");
        }
    }
}

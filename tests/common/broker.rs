//! The test broker: its URLs, what its queues hold, messages published straight to it as any
//! AMQP client could, and `rabbitmqctl` for what AMQP does not tell.

use std::process::Command;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};

use super::{closed_port, env_or, parsed, runtime};

pub const DEFAULT_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker every test uses: `$CM_TEST_BROKER_URL`.
pub fn broker_url() -> String {
    env_or("CM_TEST_BROKER_URL", DEFAULT_BROKER_URL)
}

fn broker() -> url::Url {
    parsed("CM_TEST_BROKER_URL", &broker_url())
}

/// The test broker's `host:port`.
pub fn broker_addr() -> String {
    let url = broker();
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5672)
    )
}

/// The test broker's URL with another user, password (as written in a URL) and vhost.
pub fn broker_url_as(user: &str, password: &str, vhost: &str) -> String {
    let mut url = broker();
    url.set_username(user).expect("a broker URL takes a user");
    url.set_password(Some(password))
        .expect("a broker URL takes a password");
    url.set_path(&format!("/{vhost}"));
    url.to_string()
}

/// The test broker's URL, credentials and vhost, but at `127.0.0.1:port` (a proxy to it).
pub fn broker_url_at(port: u16) -> String {
    let mut url = broker();
    url.set_host(Some("127.0.0.1"))
        .expect("a broker URL has a host");
    url.set_port(Some(port)).expect("a broker URL has a port");
    url.to_string()
}

/// A broker URL where nothing listens: the test broker's, at a free loopback port.
pub fn dead_broker_url() -> String {
    broker_url_at(closed_port())
}

/// Runs `work` over a connection of its own to the broker at `url`, closed after; None when
/// the broker does not answer.
pub fn with_broker<T>(url: &str, work: impl AsyncFnOnce(&Connection) -> T) -> Option<T> {
    runtime().block_on(async {
        let conn = Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .ok()?;
        let out = work(&conn).await;
        let _ = conn.close(200, "test done".into()).await;
        Some(out)
    })
}

/// [`with_broker`] on the test broker, which must answer.
fn on_test_broker<T>(work: impl AsyncFnOnce(&Connection) -> T) -> T {
    with_broker(&broker_url(), work)
        .unwrap_or_else(|| panic!("no broker at {} (CM_TEST_BROKER_URL)", broker_addr()))
}

pub fn delete_queues(names: &[&str]) {
    // From drops too: a broker that went away costs nothing here.
    with_broker(&broker_url(), async |conn| {
        for name in names {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .queue_delete((*name).into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    });
}

/// How many messages wait in `queue`, asked on a channel of its own (a failed passive declare
/// closes its channel): None when there is no such queue.
async fn declared_depth(conn: &Connection, queue: &str, passive: bool) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let options = QueueDeclareOptions {
        durable: true,
        passive,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .ok()?;
    Some(q.message_count())
}

/// How many messages wait in `queue` (declaring it, classic, if missing; a passive declare
/// first, so that a quorum queue is counted too).
pub fn queue_depth(queue: &str) -> u32 {
    on_test_broker(async |conn| match declared_depth(conn, queue, true).await {
        Some(n) => n,
        None => declared_depth(conn, queue, false).await.expect("declare"),
    })
}

/// How many messages wait in `queue`, if it exists (a passive declare: unlike `queue_depth`,
/// never creates it).
pub fn existing_depth(queue: &str) -> Option<u32> {
    on_test_broker(async |conn| declared_depth(conn, queue, true).await)
}

/// [`existing_depth`] asked through the broker at `url`; None too when it does not answer.
pub fn existing_depth_at(url: &str, queue: &str) -> Option<u32> {
    with_broker(url, async |conn| declared_depth(conn, queue, true).await).flatten()
}

/// Publishes one message to `exchange` with `routing_key` on the test broker.
pub fn publish_via(exchange: &str, routing_key: &str, body: &[u8], props: BasicProperties) {
    on_test_broker(async |conn| {
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            Default::default(),
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    })
}

/// Publishes one message straight to `queue` on the broker, as any AMQP client could.
pub fn publish_to(queue: &str, body: &[u8], props: BasicProperties) {
    publish_via("", queue, body, props)
}

/// Publishes a Celery task message to `queue`, as a Celery client would.
pub fn publish_message(queue: &str, msg: &cm::celery::message::TaskMessage) {
    let (body, props) = msg.encode("test");
    publish_to(queue, &body, props);
}

/// A body that is no job, published to `queue` through the broker at `url`, with the broker's
/// confirm that it took it.
pub fn publish_poison_at(url: &str, queue: &str) {
    with_broker(url, async |conn| {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirms");
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                Default::default(),
                b"not a job",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the poison message was not taken");
    })
    .unwrap_or_else(|| panic!("no broker at {url}"));
}

/// `rabbitmqctl ARGS`, which must succeed: its stdout.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One column of `rabbitmqctl list_queues` for `queue` (of the node `node`, or the local one).
pub fn queue_info(queue: &str, column: &str, node: Option<&str>) -> Option<String> {
    let mut args = vec!["-q"];
    if let Some(n) = node {
        args.extend(["-n", n]);
    }
    args.extend(["list_queues", "name", column]);
    let out = Command::new("rabbitmqctl")
        .args(&args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let mut cols = line.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next().map(str::to_string))?
        })
}

/// Messages delivered and not yet acked on `queue` of the machine's broker.
pub fn unacked(queue: &str) -> Option<u64> {
    queue_info(queue, "messages_unacknowledged", None)?
        .parse()
        .ok()
}

//! `cm mq start|stop|status|setup`: what the fabfile's `mq.*` tasks did for the local RabbitMQ.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use serde::{Deserialize, Serialize};

use crate::amqp;
use crate::amqp::node::{self, Ctl, CtlError};
use crate::config::urls::redact;
use crate::config::Config;
use crate::exit::{CmError, Code};

/// How long a starting node may take to answer, then to finish booting, then to listen.
const START_DEADLINE: Duration = Duration::from_secs(60);

fn require_root(what: &str) -> Result<(), CmError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(CmError::Permission {
            message: format!("cm mq {what} manages the system's RabbitMQ and must run as root: sudo cm mq {what}"),
        })
    }
}

/// Missing tools and a node that does not answer are the broker being unavailable (69);
/// a node that takes too long is a temporary failure (75); anything else is a failure (1).
fn ctl_error(e: CtlError) -> CmError {
    let code = match e {
        CtlError::Missing { .. } => Code::Unavailable,
        CtlError::Timeout { .. } => Code::TempFail,
        _ => Code::Failure,
    };
    CmError::Partial {
        message: e.to_string(),
        code,
    }
}

fn broker_uri(cfg: &Config) -> Result<AMQPUri, CmError> {
    // Config validation already parsed it; this cannot fail for a loaded config.
    cfg.broker_url
        .parse()
        .map_err(|e| CmError::Other(format!("broker.url: {e}")))
}

pub async fn start(cfg: &Config) -> anyhow::Result<Code> {
    require_root("start")?;
    let ctl = Ctl::find().map_err(ctl_error)?;
    if ctl.node_answers().await {
        crate::outln!("RabbitMQ is already running");
        return Ok(Code::Success);
    }
    let server = node::find_tool("rabbitmq-server").map_err(ctl_error)?;
    // No systemd on every machine: start the node directly, as the fabfile did (the Debian
    // wrapper drops to the rabbitmq user by itself). `-detached` returns once the VM forked.
    let status = tokio::process::Command::new(&server)
        .arg("-detached")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|cause| {
            ctl_error(CtlError::Io {
                command: "rabbitmq-server -detached".into(),
                cause,
            })
        })?;
    if !status.success() {
        return Err(CmError::Other(format!(
            "`rabbitmq-server -detached` failed ({status}): see /var/log/rabbitmq/ for why"
        ))
        .into());
    }
    crate::outln!("RabbitMQ starting ...");
    let deadline = Instant::now() + START_DEADLINE;
    // `await_startup` fails until the node has registered, so wait for `status` to answer first.
    while !ctl.node_answers().await {
        if Instant::now() >= deadline {
            return Err(CmError::Partial {
                message: format!("RabbitMQ did not answer `rabbitmqctl status` within {}s of `rabbitmq-server -detached`: see /var/log/rabbitmq/", START_DEADLINE.as_secs()),
                code: Code::TempFail,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ctl.run(&["await_startup"], None, START_DEADLINE)
        .await
        .map_err(ctl_error)?;
    // The node can answer rabbitmqctl before its AMQP listener is bound.
    let uri = broker_uri(cfg)?;
    let (host, port) = (uri.authority.host.as_str(), uri.authority.port);
    if node::is_local_host(host) {
        let addr = format!("{host}:{port}");
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if Instant::now() >= deadline {
                return Err(CmError::Partial {
                    message: format!("RabbitMQ runs but does not accept connections on {addr}: check its listeners in /etc/rabbitmq/"),
                    code: Code::TempFail,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        crate::outln!("RabbitMQ is running and accepts connections on {addr}");
    } else {
        crate::outln!("RabbitMQ is running (the configured broker {host} is another machine)");
    }
    Ok(Code::Success)
}

pub async fn stop() -> anyhow::Result<Code> {
    require_root("stop")?;
    let ctl = Ctl::find().map_err(ctl_error)?;
    if !ctl.node_answers().await {
        crate::outln!("RabbitMQ is not running");
        return Ok(Code::Success);
    }
    ctl.run(&["stop"], None, START_DEADLINE)
        .await
        .map_err(ctl_error)?;
    crate::outln!("RabbitMQ stopped");
    Ok(Code::Success)
}

#[derive(Debug, Serialize)]
struct QueueCounts {
    name: String,
    /// The work queue this one belongs to (itself, or the queue whose dead letters it holds).
    work_queue: String,
    exists: bool,
    ready: Option<u64>,
    /// Only `rabbitmqctl` knows this; over AMQP it is unknown (null).
    unacked: Option<u64>,
    consumers: Option<u64>,
}

#[derive(Debug, Serialize)]
struct BrokerStatus {
    broker: String,
    answers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Where the counts come from: "rabbitmqctl" or "amqp".
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    queues: Vec<QueueCounts>,
}

#[derive(Debug, Deserialize)]
struct ListedQueue {
    name: String,
    messages_ready: u64,
    messages_unacknowledged: u64,
    consumers: u64,
}

/// Every configured queue and its `.dead` twin, as (queue, work queue).
fn queue_names(cfg: &Config) -> Vec<(String, String)> {
    cfg.queues
        .iter()
        .flat_map(|q| {
            [
                (q.name.clone(), q.name.clone()),
                (format!("{}.dead", q.name), q.name.clone()),
            ]
        })
        .collect()
}

pub async fn status(cfg: &Config, json: bool) -> anyhow::Result<Code> {
    let shown = redact(&cfg.broker_url);
    let conn = match amqp::Brokers::of(cfg).connect("cm mq status").await {
        Ok(c) => c,
        Err(e) => {
            if json {
                let report = BrokerStatus {
                    broker: shown,
                    answers: false,
                    error: Some(e.to_string()),
                    source: None,
                    queues: Vec::new(),
                };
                crate::outln!("{}", serde_json::to_string_pretty(&report)?);
            }
            return Err(e.into());
        }
    };
    let uri = broker_uri(cfg)?;
    let names = queue_names(cfg);
    let (source, queues) = match counts_from_ctl(&uri, &names).await {
        Some(q) => ("rabbitmqctl", q),
        None => ("amqp", counts_from_amqp(&conn, &names).await?),
    };
    let _ = conn.close(200, "status read".into()).await;
    let report = BrokerStatus {
        broker: shown,
        answers: true,
        error: None,
        source: Some(source),
        queues,
    };
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&report);
    }
    Ok(Code::Success)
}

fn print_status(report: &BrokerStatus) {
    crate::outln!("broker {} answers", report.broker);
    let width = report
        .queues
        .iter()
        .map(|q| q.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    crate::outln!(
        "{:<width$}  {:>8}  {:>8}  {:>9}",
        "QUEUE",
        "READY",
        "UNACKED",
        "CONSUMERS"
    );
    let n = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    for q in &report.queues {
        if q.exists {
            crate::outln!(
                "{:<width$}  {:>8}  {:>8}  {:>9}",
                q.name,
                n(q.ready),
                n(q.unacked),
                n(q.consumers)
            );
        } else {
            crate::outln!("{:<width$}  (not declared yet)", q.name);
        }
    }
    if report.source == Some("amqp") {
        crate::outln!(
            "(unacked is known to rabbitmqctl only: run `sudo cm mq status` on the broker's host)"
        );
    }
}

/// Counts with unacked, where this is the broker's host and `rabbitmqctl` may talk to the node.
async fn counts_from_ctl(uri: &AMQPUri, names: &[(String, String)]) -> Option<Vec<QueueCounts>> {
    if !nix::unistd::geteuid().is_root() || !node::is_local_host(&uri.authority.host) {
        return None;
    }
    let ctl = Ctl::find().ok()?;
    let listed: Vec<ListedQueue> = ctl
        .list(&[
            "list_queues",
            "-p",
            &uri.vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])
        .await
        .map_err(|e| tracing::debug!("falling back to AMQP counts: {e}"))
        .ok()?;
    Some(
        names
            .iter()
            .map(|(name, work)| {
                let found = listed.iter().find(|l| &l.name == name);
                QueueCounts {
                    name: name.clone(),
                    work_queue: work.clone(),
                    exists: found.is_some(),
                    ready: found.map(|l| l.messages_ready),
                    unacked: found.map(|l| l.messages_unacknowledged),
                    consumers: found.map(|l| l.consumers),
                }
            })
            .collect(),
    )
}

/// Counts through a passive declare: ready and consumers, without creating anything.
async fn counts_from_amqp(
    conn: &lapin::Connection,
    names: &[(String, String)],
) -> anyhow::Result<Vec<QueueCounts>> {
    let mut out = Vec::new();
    for (name, work) in names {
        // A missing queue closes the channel (404), so each queue gets its own.
        let channel = conn.create_channel().await?;
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let counts = declared.ok();
        out.push(QueueCounts {
            name: name.clone(),
            work_queue: work.clone(),
            exists: counts.is_some(),
            ready: counts.as_ref().map(|q| u64::from(q.message_count())),
            unacked: None,
            consumers: counts.as_ref().map(|q| u64::from(q.consumer_count())),
        });
        let _ = channel.close(200, "counted".into()).await;
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct ListedVhost {
    name: String,
}

#[derive(Debug, Deserialize)]
struct ListedUser {
    user: String,
}

pub async fn setup(cfg: &Config) -> anyhow::Result<Code> {
    let uri = broker_uri(cfg)?;
    let host = &uri.authority.host;
    if !node::is_local_host(host) {
        return Err(CmError::BadArgument(format!(
            "[broker] url points at {host}, not this machine: run `sudo cm mq setup` on the broker's host (rabbitmqctl manages the local node)"
        ))
        .into());
    }
    require_root("setup")?;
    let ctl = Ctl::find().map_err(ctl_error)?;
    if !ctl.node_answers().await {
        return Err(CmError::Partial {
            message: "RabbitMQ is not running here: start it with `sudo cm mq start`".into(),
            code: Code::Unavailable,
        }
        .into());
    }
    let (vhost, user, password) = (
        uri.vhost.as_str(),
        uri.authority.userinfo.username.as_str(),
        uri.authority.userinfo.password.as_str(),
    );
    let quick = Duration::from_secs(30);

    let vhosts: Vec<ListedVhost> = ctl
        .list(&["list_vhosts", "name"])
        .await
        .map_err(ctl_error)?;
    if vhosts.iter().any(|v| v.name == vhost) {
        crate::outln!("vhost {vhost:?}: exists");
    } else {
        ctl.run(&["add_vhost", vhost], None, quick)
            .await
            .map_err(ctl_error)?;
        crate::outln!("vhost {vhost:?}: created");
    }

    let users: Vec<ListedUser> = ctl.list(&["list_users"]).await.map_err(ctl_error)?;
    let existed = users.iter().any(|u| u.user == user);
    if existed {
        crate::outln!("user {user:?}: exists");
    } else {
        // The password goes through stdin, so it never shows in `ps`.
        ctl.run(&["add_user", user], Some(password), quick)
            .await
            .map_err(ctl_error)?;
        crate::outln!("user {user:?}: created");
    }

    ctl.run(
        &["set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        None,
        quick,
    )
    .await
    .map_err(ctl_error)?;
    crate::outln!("permissions: {user:?} may configure, write and read everything in {vhost:?}");

    if existed
        && ctl
            .run(&["authenticate_user", user], Some(password), quick)
            .await
            .is_err()
    {
        return Err(CmError::Permission {
            message: format!("user {user:?} already exists with another password than [broker] url's: `sudo rabbitmqctl change_password {user} PASSWORD`, or fix [broker] url"),
        }
        .into());
    }
    let conn = amqp::Brokers::of(cfg).connect("cm mq setup").await?;
    let _ = conn.close(200, "setup checked".into()).await;
    crate::outln!("ok: {} accepts the login", redact(&cfg.broker_url));
    Ok(Code::Success)
}

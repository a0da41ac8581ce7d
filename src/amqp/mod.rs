//! RabbitMQ through lapin: connect to a node of a list (with errors an operator can act on),
//! declare cm's queues, publish confirmed.
//!
//! - `connect`: the broker list as a value: a connection to the first node that answers, and
//!   which node that is.
//! - `topology`: the queues cm declares and consumes without acks.
//! - `publisher`: a channel in confirm mode: send a batch, wait for its confirms.
//! - `inspect`: `cm queue status --all`'s ping over the `cm.control` exchange.
//! - `node`: the local RabbitMQ node through its own tools (`cm mq`).
//! - `tls`: `amqps://` with rustls: trust, client certificates, what a failed handshake means.

mod connect;
pub mod inspect;
pub mod node;
mod publisher;
mod tls;
mod topology;

pub use connect::{Brokers, CONNECT_TIMEOUT, HEARTBEAT_SECONDS};
pub use publisher::{Publisher, DIRECT_REPLY_TO, NACK_RETRY_FOR};
pub use topology::{
    consume_unacked, declare_dead_queue, declare_queue, declare_work_queue, private_queue,
};

use crate::config::urls::redact;

/// The test broker of the unit tests that need one (`make up`).
#[cfg(test)]
pub(crate) const TEST_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no broker at {url}: {reason} (start RabbitMQ with `make up` or `rabbitmq-server -detached`, or fix [broker] url in fabfile.toml)")]
    Unreachable { url: String, reason: String },
    #[error(
        "broker at {url} refused the login: {reason} (check the user and password in [broker] url)"
    )]
    AccessRefused { url: String, reason: String },
    #[error("broker at {url} refused the virtual host: {reason} (create it with `rabbitmqctl add_vhost` or fix [broker] url)")]
    VhostRefused { url: String, reason: String },
    /// `amqps://` the broker could not be reached over: never retried in plain AMQP.
    #[error("broker at {url} failed TLS: {reason} ({fix})")]
    Tls {
        url: String,
        reason: String,
        fix: &'static str,
    },
    /// `[broker]`'s TLS files cannot be used (unreadable, not PEM, a key that is not the
    /// certificate's): nothing was sent.
    #[error("{reason}")]
    TlsSetup { reason: String },
    #[error("broker at {url}: {context}: {cause}")]
    Protocol {
        url: String,
        context: String,
        cause: lapin::Error,
    },
    #[error("broker at {url} did not confirm the publish of {id} to queue {queue} (nacked)")]
    Nacked {
        url: String,
        queue: String,
        id: String,
    },
    /// The broker could not route the message (mandatory): no queue of that name, or a
    /// reply address whose waiter is gone. A reply's is expected; callers tell them apart.
    #[error("broker at {url} returned the publish of {id} to queue {queue}: {code} {text} (does the queue exist?)")]
    Returned {
        url: String,
        queue: String,
        id: String,
        /// The AMQP reply code, 312 (NO_ROUTE) for an unroutable message.
        code: u16,
        text: String,
    },
}

/// A protocol error of the broker at `url` (redacted), while doing `context`.
pub fn protocol(url: &str, context: &str, cause: lapin::Error) -> BrokerError {
    BrokerError::Protocol {
        url: redact(url),
        context: context.to_string(),
        cause,
    }
}

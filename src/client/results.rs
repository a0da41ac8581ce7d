//! Final states pushed to a waiting publisher. `cm launch/provision/call --wait` of a small
//! batch has its jobs answered on its publishing channel (`reply_to` is RabbitMQ's direct
//! reply-to, as an rpc:// client's is a queue of its own), and a worker sends each job's final
//! state there once it is stored (`worker::delivery::outcome`). The store stays the truth: a reply only
//! says when to look at it, so `--wait` answers as soon as the last job is final instead of at
//! its next poll.

use std::collections::HashSet;
use std::time::Duration;

use futures_lite::StreamExt;
use serde::Deserialize;

use crate::amqp::{self, BrokerError, Publisher};

/// Batches up to this many jobs are told their final states; bigger ones are polled. Each
/// reply is one more message for the broker and a confirmed publish for the worker, which a
/// batch of thousands would pay in throughput, and to whom a poll's 200 ms is nothing.
pub const PUSHED_UP_TO: usize = 100;

/// The replies of one `--wait`, and the jobs it has heard of.
pub struct Replies {
    consumer: lapin::Consumer,
    heard: HashSet<String>,
    /// The consumer ended (connection lost): the waiter goes on by polling alone.
    closed: bool,
}

#[derive(Deserialize)]
struct Reply {
    task_id: String,
}

impl Replies {
    /// Replies to the messages `publisher` sends from now on with [`Replies::address`] as
    /// their `reply_to`: consumed before any job is published, so that no reply comes unheard.
    /// No queue is declared: a private one took the broker longer to make than the rest of a
    /// one-job `--wait` took to publish.
    pub async fn on(publisher: &Publisher) -> Result<Self, BrokerError> {
        Ok(Self {
            consumer: publisher.direct_replies().await?,
            heard: HashSet::new(),
            closed: false,
        })
    }

    /// Where the jobs' final states are to go: their messages' `reply_to`.
    pub fn address(&self) -> &'static str {
        amqp::DIRECT_REPLY_TO
    }

    /// Jobs heard of as final so far.
    pub fn heard(&self) -> usize {
        self.heard.len()
    }

    /// Waits until `total` jobs are heard of, or `within` passed. Once the replies stopped for
    /// good (the connection went), it only waits out `within`: the caller polls.
    pub async fn until(&mut self, total: usize, within: Duration) {
        if self.closed {
            tokio::time::sleep(within).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.heard.len() < total {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Err(_) => return,
                Ok(Some(Ok(delivery))) => {
                    if let Ok(reply) = serde_json::from_slice::<Reply>(&delivery.data) {
                        self.heard.insert(reply.task_id);
                    }
                }
                Ok(Some(Err(_)) | None) => {
                    self.closed = true;
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
    }
}

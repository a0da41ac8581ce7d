//! One broker connection's worth of consuming: connect and declare, consume while job slots are
//! free, and on shutdown cancel, hand back what was prefetched and close after the last ack.
//! A lost connection ends the session; `serve` opens the next one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

use super::acks::Acks;
use super::delivery::{self, Ctx};
use super::lease::{self, Held};
use super::remote::Remote;
use super::revokes::Revocations;
use super::schedule;
use super::signals;
use super::stats::Counters;
use crate::amqp::{self, Publisher};
use crate::config::{Config, WorkerRef};
use crate::jobs::cancel::Stops;
use crate::store::{Store, Writer};

/// Prefetched deliveries are handed back within this on shutdown; the broker returns the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Session {
    /// Shared with the remote control's task, which opens its reply channels on it.
    conn: Arc<lapin::Connection>,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    ctx: Arc<Ctx>,
    /// Publishes again the jobs of this queue whose lease lapsed; ends with the session.
    reaper: tokio::task::AbortHandle,
    /// Publishes again the SCHEDULED jobs of this queue when due; ends with the session.
    scheduler: tokio::task::AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reaper.abort();
        self.scheduler.abort();
    }
}

/// What a worker keeps across its broker sessions, for each session's job handlers.
pub(super) struct Kept {
    pub(super) store: Store,
    pub(super) writer: Writer,
    pub(super) stats: Arc<Counters>,
    /// Ends running jobs early (a revoke's terminate, a lapsed lease, the stop grace's end).
    pub(super) stops: Stops,
    /// The jobs held by lease, renewed by `lease::renew`.
    pub(super) held: Held,
    /// The revoked ids, kept current by `revokes::spawn`.
    pub(super) revoked: Revocations,
    /// What Celery's tools are told and asked (pidbox, events): its clock, running jobs and
    /// event switch last across reconnects; each session attaches its connection.
    pub(super) remote: Arc<Remote>,
}

/// Why a session's consume loop ended.
pub(super) enum Ended {
    Signal(&'static str),
    Lost(String),
}

/// How long to wait before reconnect attempt `n` (0-based): 0.5 s doubling, at most 30 s.
pub(super) fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(30))
}

/// Errors no retry can fix: no broker at the URL, a refused login or vhost.
pub(super) fn is_final_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<amqp::BrokerError>(),
            Some(
                amqp::BrokerError::Unreachable { .. }
                    | amqp::BrokerError::AccessRefused { .. }
                    | amqp::BrokerError::VhostRefused { .. }
            )
        )
    })
}

impl Session {
    pub(super) async fn open(
        cfg: &Config,
        worker: WorkerRef<'_>,
        kept: &Kept,
    ) -> anyhow::Result<Self> {
        let Kept {
            store,
            writer,
            stats,
            stops,
            held,
            revoked,
            remote,
        } = kept;
        let node = cfg.node_name(worker.name);
        let queue = worker.queue;
        let conn = Arc::new(amqp::connect(&cfg.broker_url, &format!("cm worker {node}")).await?);
        let channel = conn.create_channel().await.context("opening a channel")?;
        amqp::declare_work_queue(&channel, &cfg.broker_url, queue).await?;
        channel
            .basic_qos(queue.prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch (basic.qos)")?;
        let consumer = channel
            .basic_consume(
                queue.name.as_str().into(),
                node.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming from queue {}", queue.name))?;
        let publisher = Publisher::open(&conn, &cfg.broker_url, &node).await?;
        remote.attach(&conn, &cfg.broker_url).await?;
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            node: node.as_str().into(),
            queue: queue.name.clone(),
            retries: queue.retries,
            quorum: queue.quorum,
            delivery_limit: queue.delivery_limit,
            retry_backoff: queue.retry_backoff,
            publisher,
            acks: Acks::spawn(channel.clone()),
            store: store.clone(),
            writer: writer.clone(),
            dead_declared: OnceCell::new(),
            stats: stats.clone(),
            stops: stops.clone(),
            result_dir: std::env::temp_dir(),
            held: held.clone(),
            revoked: revoked.clone(),
            remote: remote.clone(),
        });
        let reaper = tokio::spawn(lease::reap(ctx.clone())).abort_handle();
        let scheduler = tokio::spawn(schedule::run(ctx.clone())).abort_handle();
        Ok(Self {
            conn,
            channel,
            consumer,
            ctx,
            reaper,
            scheduler,
        })
    }

    /// Takes jobs while slots are free, until a stop signal or the connection's end.
    pub(super) async fn consume(
        &mut self,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        stop: &mut signals::Stop,
    ) -> Ended {
        loop {
            // A delivery is taken from the stream only when a slot is free, so on shutdown
            // everything still in the stream was never started and can go straight back.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ended::Signal("job slots closed"),
                },
                name = stop.next() => return Ended::Signal(name),
            };
            tokio::select! {
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        self.ctx.acks.taken(delivery.delivery_tag);
                        // Before the job's task first runs: a commit the writer makes meanwhile
                        // already waits for this job.
                        let in_flight = self.ctx.writer.in_flight();
                        let ctx = self.ctx.clone();
                        // Boxed: the job's future is large, and spawning moves it about a dozen
                        // times; a box moves as a pointer.
                        running.spawn(Box::pin(async move { delivery::handle(&ctx, delivery, permit, in_flight).await }));
                    }
                    // lapin reports a dead peer (missed heartbeats) or a forced close as an
                    // error, then ends the stream: both mean reconnect, never a silent stall.
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("the broker cancelled the consumer (queue deleted?)".into()),
                },
                name = stop.next() => return Ended::Signal(name),
            }
            while running.try_join_next().is_some() {}
        }
    }

    /// Warm shutdown: cancel, hand back what was prefetched but not started. Returns how many.
    pub(super) async fn drain(&mut self) -> usize {
        let node = self.ctx.node.clone();
        if let Err(e) = self
            .channel
            .basic_cancel((&*node).into(), BasicCancelOptions::default())
            .await
        {
            warn!("cancelling the consumer: {e}");
        }
        let mut requeued = 0;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(Ok(delivery)) = self.consumer.next().await {
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                if delivery.nack(requeue).await.is_ok() {
                    requeued += 1;
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("prefetched jobs not handed back within {DRAIN_TIMEOUT:?}; the broker requeues them on close");
        }
        requeued
    }

    /// Closes the channel and the connection once the acks asked for went out.
    pub(super) async fn disconnect(&self) {
        // Acks still queued would be lost with the channel: the broker would run those jobs again.
        // Bounded: a broker that stopped reading must not keep the worker from exiting.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.ctx.acks.flush())
            .await
            .is_err()
        {
            warn!("acks not sent within {DRAIN_TIMEOUT:?}; the broker delivers those jobs again");
        }
        let _ = self.channel.close(200, "worker stopping".into()).await;
        let _ = self.conn.close(200, "worker stopping".into()).await;
    }
}

//! The session loop: connect to the broker, consume, and reconnect with backoff whenever the
//! connection is lost, until a shutdown is asked ([`Sessions`]). Each [`Session`] is one
//! connection: declare, start the pidbox (remote control), the reaper, the scheduler, the
//! schedules' tick and the pruning of `[retention]`, take
//! deliveries while job slots are free, and on shutdown cancel, hand back what was prefetched
//! and close after the last ack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::acks::Acks;
use super::context::{SessionContext, WorkerState};
use super::delivery;
use super::pidbox;
use super::retention;
use super::shutdown::Shutdown;
use super::tick;
use super::{outbox, republish};
use crate::amqp::{self, Publisher};

/// Prefetched deliveries are handed back within this on shutdown; the broker returns the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker's broker sessions, one after another, and the jobs running over them.
pub(super) struct Sessions {
    worker: Arc<WorkerState>,
    /// The session consuming now; `None` once the connection was lost and shutdown came
    /// before a new one.
    current: Option<Session>,
    /// One per job that may run at a time (`concurrency`).
    slots: Arc<Semaphore>,
    /// The deliveries being handled; they outlive the session that took them.
    pub(super) running: JoinSet<()>,
}

impl Sessions {
    /// Opens the first session. It must work: `cm queue start` reports its failure and gives
    /// up. Only a broker-side hiccup gets a few quick retries (seen: INTERNAL_ERROR consuming
    /// from a quorum queue that a sibling worker declared a moment ago); no broker or a refused
    /// login fail at once.
    pub(super) async fn start(worker: Arc<WorkerState>) -> anyhow::Result<Self> {
        let mut attempt = 0;
        let first = loop {
            match Session::open(&worker).await {
                Ok(s) => break s,
                Err(e) if attempt < 3 && !is_final_refusal(&e) => {
                    attempt += 1;
                    warn!("starting to consume, attempt {attempt}: {e:#}; trying again");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let slots = Arc::new(Semaphore::new(usize::from(worker.queue.concurrency)));
        Ok(Self {
            worker,
            current: Some(first),
            slots,
            running: JoinSet::new(),
        })
    }

    /// Consumes until a shutdown is asked, reconnecting with backoff whenever the connection
    /// is lost. Returns what asked.
    pub(super) async fn run(&mut self, shutdown: &mut Shutdown) -> &'static str {
        let queue = &self.worker.queue.name;
        loop {
            let Some(session) = self.current.as_mut() else {
                return shutdown.requested().await;
            };
            match session
                .consume(&self.slots, &mut self.running, shutdown)
                .await
            {
                Ended::Shutdown(name) => return name,
                Ended::Lost(why) => {
                    self.current = None;
                    // The next connect tries another node of the list first.
                    self.worker.brokers.lost();
                    warn!(
                        "lost the broker connection: {why}; unacked jobs go back to queue {queue} and run again; reconnecting"
                    );
                }
            }
            let mut attempt = 0;
            let session = loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff(attempt)) => {}
                    name = shutdown.requested() => return name,
                }
                attempt += 1;
                match Session::open(&self.worker).await {
                    Ok(s) => {
                        info!("reconnected to the broker after {attempt} attempt(s); consuming from queue {queue} again");
                        break s;
                    }
                    Err(e) => warn!(
                        "reconnect attempt {attempt} failed: {e:#}; next in {:?}",
                        backoff(attempt)
                    ),
                }
            };
            self.current = Some(session);
        }
    }

    /// Warm shutdown's first move: cancel the consumer and hand back what was prefetched but
    /// not started, so nothing new arrives while the running jobs finish. Returns how many.
    pub(super) async fn drain(&mut self) -> usize {
        match self.current.as_mut() {
            Some(s) => s.drain().await,
            None => 0,
        }
    }

    /// Closes the session once the acks asked for went out (an ack after close is lost).
    pub(super) async fn disconnect(&self) {
        if let Some(s) = &self.current {
            s.disconnect().await;
        }
    }
}

/// One broker connection's worth of consuming.
struct Session {
    /// Shared with the remote control's task, which opens its reply channels on it.
    conn: Arc<lapin::Connection>,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    ctx: Arc<SessionContext>,
    /// Publishes again the jobs of this queue whose lease lapsed; ends with the session.
    reaper: tokio::task::AbortHandle,
    /// Publishes again the SCHEDULED jobs of this queue when due; ends with the session.
    scheduler: tokio::task::AbortHandle,
    /// Fires the schedules' slots, and prunes finished jobs (`[retention]`); end with it.
    tick: tokio::task::AbortHandle,
    retention: tokio::task::AbortHandle,
    /// Publishes the jobs the store released; ends with the session.
    outbox: tokio::task::AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reaper.abort();
        self.scheduler.abort();
        self.tick.abort();
        self.retention.abort();
        self.outbox.abort();
    }
}

/// Why a session's consume loop ended.
enum Ended {
    Shutdown(&'static str),
    Lost(String),
}

/// How long to wait before reconnect attempt `n` (0-based): 0.5 s doubling, at most 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(30))
}

/// Errors no retry can fix: no broker at the URL, TLS refused, a refused login or vhost.
fn is_final_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<amqp::BrokerError>(),
            Some(
                amqp::BrokerError::Unreachable { .. }
                    | amqp::BrokerError::Tls { .. }
                    | amqp::BrokerError::TlsSetup { .. }
                    | amqp::BrokerError::AccessRefused { .. }
                    | amqp::BrokerError::VhostRefused { .. }
            )
        )
    })
}

impl Session {
    async fn open(worker: &Arc<WorkerState>) -> anyhow::Result<Self> {
        let (cfg, node, queue) = (&worker.cfg, &*worker.node, &worker.queue);
        let conn = Arc::new(worker.brokers.connect(&format!("cm worker {node}")).await?);
        let channel = conn.create_channel().await.context("opening a channel")?;
        amqp::declare_work_queue(&channel, &cfg.broker_url, queue).await?;
        channel
            .basic_qos(queue.prefetch, BasicQosOptions::default())
            .await
            .context("setting the prefetch (basic.qos)")?;
        let consumer = channel
            .basic_consume(
                queue.name.as_str().into(),
                node.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming from queue {}", queue.name))?;
        let publisher = Publisher::open(&conn, &worker.brokers.current_node(), node).await?;
        // Only `cm queue status --all`'s ping is required; without a pidbox or events the
        // worker still runs jobs.
        let remote = &worker.remote;
        remote.answer_pings(&conn, &cfg.broker_url).await?;
        if let Err(e) = pidbox::listen(remote, &conn).await {
            warn!("remote control off for this connection: {e} (another worker named {node}?)");
        }
        remote.send_events_on(&conn).await;
        let ctx = Arc::new(SessionContext {
            worker: worker.clone(),
            publisher,
            acks: Acks::spawn(channel.clone()),
            dead_queue: OnceCell::new(),
        });
        let reaper = tokio::spawn(republish::reap(ctx.clone())).abort_handle();
        let scheduler = tokio::spawn(republish::schedule(ctx.clone())).abort_handle();
        let tick = tokio::spawn(tick::run(ctx.clone())).abort_handle();
        let retention = tokio::spawn(retention::run(worker.clone())).abort_handle();
        let outbox = tokio::spawn(outbox::drain(ctx.clone())).abort_handle();
        Ok(Self {
            conn,
            channel,
            consumer,
            ctx,
            reaper,
            scheduler,
            tick,
            retention,
            outbox,
        })
    }

    /// Takes jobs while slots are free, until a shutdown is asked or the connection's end.
    async fn consume(
        &mut self,
        slots: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        shutdown: &mut Shutdown,
    ) -> Ended {
        loop {
            // A delivery is taken from the stream only when a slot is free, so on shutdown
            // everything still in the stream was never started and can go straight back.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ended::Shutdown("job slots closed"),
                },
                name = shutdown.requested() => return Ended::Shutdown(name),
            };
            tokio::select! {
                next = self.consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        self.ctx.acks.taken(delivery.delivery_tag);
                        // Before the job's task first runs: a commit the writer makes meanwhile
                        // already waits for this job.
                        let in_flight = self.ctx.worker.writer.in_flight();
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
                name = shutdown.requested() => return Ended::Shutdown(name),
            }
            while running.try_join_next().is_some() {}
        }
    }

    /// Cancels the consumer and hands back what was prefetched but not started.
    async fn drain(&mut self) -> usize {
        let node = &*self.ctx.worker.node;
        if let Err(e) = self
            .channel
            .basic_cancel(node.into(), BasicCancelOptions::default())
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
    async fn disconnect(&self) {
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

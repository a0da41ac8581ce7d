//! The session loop: connect to the broker, consume, and reconnect with backoff whenever the
//! connection is lost, until a shutdown is asked ([`Sessions`]). Each [`Session`] is one
//! connection: declare, start the pidbox (remote control), the reaper, the scheduler, the
//! schedules' tick and the pruning of `[retention]`, take
//! deliveries while job slots are free, and on shutdown cancel, hand back what was prefetched
//! and close after the last ack.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::acks::Acks;
use super::context::{times_returned, SessionContext, WorkerState};
use super::delivery;
use super::pace::{Change, Pace};
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
    /// What it prefetches, and when it hands prefetched jobs back (fair dispatch).
    pace: Pace,
    /// Deliveries taken back from a cancelled consumer but not handed back (a quorum queue's
    /// message near its delivery limit): they run first.
    kept: VecDeque<Delivery>,
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

/// Returns a delivery to its queue; whether the broker was told.
async fn nack_requeue(delivery: &Delivery) -> bool {
    let requeue = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    delivery.nack(requeue).await.is_ok()
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
        let pace = Pace::new(queue.prefetch, queue.concurrency, queue.hand_back_after);
        Ok(Self {
            conn,
            channel,
            consumer,
            pace,
            kept: VecDeque::new(),
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
            let permit = match self.free_slot(slots, shutdown).await {
                Ok(p) => p,
                Err(ended) => return ended,
            };
            let delivery = match self.kept.pop_front() {
                Some(delivery) => delivery,
                None => tokio::select! {
                    next = self.consumer.next() => match next {
                        Some(Ok(delivery)) => delivery,
                        // lapin reports a dead peer (missed heartbeats) or a forced close as an
                        // error, then ends the stream: both mean reconnect, never a silent stall.
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        None => return Ended::Lost("the broker cancelled the consumer (queue deleted?)".into()),
                    },
                    name = shutdown.requested() => return Ended::Shutdown(name),
                },
            };
            self.ctx.acks.taken(delivery.delivery_tag);
            // Before the job's task first runs: a commit the writer makes meanwhile already
            // waits for this job.
            let in_flight = self.ctx.worker.writer.in_flight();
            let ctx = self.ctx.clone();
            // Boxed: the job's future is large, and spawning moves it about a dozen times; a
            // box moves as a pointer.
            running.spawn(Box::pin(async move {
                delivery::handle(&ctx, delivery, permit, in_flight).await
            }));
            while running.try_join_next().is_some() {}
        }
    }

    /// A free job slot. Should every slot stay busy past the pace's patience, the prefetched
    /// deliveries go back to the queue first (another worker may be idle), and once a slot
    /// frees the session consumes again holding no more than it can start (`pace`).
    async fn free_slot(
        &mut self,
        slots: &Arc<Semaphore>,
        shutdown: &mut Shutdown,
    ) -> Result<OwnedSemaphorePermit, Ended> {
        let asked = Instant::now();
        let acquire = slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let patience = self.pace.patience();
        let waited_out = async move {
            match patience {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            permit = &mut acquire => Some(permit),
            () = waited_out => None,
            name = shutdown.requested() => return Err(Ended::Shutdown(name)),
        };
        let permit = match first {
            Some(permit) => permit,
            None => {
                let handed = self.hand_back().await;
                self.pace.handed_back();
                if handed > 0 {
                    info!(
                        "{handed} prefetched job(s) handed back to queue {}: every job slot busy over {:?}; consuming again with prefetch {} once a slot frees",
                        self.ctx.worker.queue.name,
                        patience.unwrap_or_default(),
                        self.pace.prefetch()
                    );
                }
                let permit = tokio::select! {
                    permit = &mut acquire => permit,
                    name = shutdown.requested() => return Err(Ended::Shutdown(name)),
                };
                self.consume_again().await?;
                permit
            }
        };
        let permit = permit.map_err(|_| Ended::Shutdown("job slots closed"))?;
        if self.pace.slot_taken(asked.elapsed()) == Change::Raise {
            self.hand_back().await;
            self.consume_again().await?;
            info!(
                "jobs on queue {} are quick again: consuming with prefetch {} again",
                self.ctx.worker.queue.name,
                self.pace.prefetch()
            );
        }
        Ok(permit)
    }

    /// Consumes again (after [`Session::hand_back`]) with the prefetch the pace says.
    async fn consume_again(&mut self) -> Result<(), Ended> {
        let (queue, node) = (&self.ctx.worker.queue.name, &*self.ctx.worker.node);
        let lost = |what: &str, e: lapin::Error| Ended::Lost(format!("{what}: {e}"));
        self.channel
            .basic_qos(self.pace.prefetch(), BasicQosOptions::default())
            .await
            .map_err(|e| lost("setting the prefetch (basic.qos)", e))?;
        self.consumer = self
            .channel
            .basic_consume(
                queue.as_str().into(),
                node.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| lost(&format!("consuming from queue {queue} again"), e))?;
        Ok(())
    }

    /// Cancels the consumer and hands back what was prefetched but not started: the session's
    /// warm shutdown. Returns how many.
    async fn drain(&mut self) -> usize {
        let handed = self.hand_back().await;
        let mut kept = 0;
        for delivery in std::mem::take(&mut self.kept) {
            if nack_requeue(&delivery).await {
                kept += 1;
            }
        }
        handed + kept
    }

    /// Cancels the consumer and returns the deliveries it prefetched to the queue, but for a
    /// quorum queue's message so near its delivery limit that one more return would dead-letter
    /// it (it stays in `kept`). Returns how many went back.
    async fn hand_back(&mut self) -> usize {
        let node = &*self.ctx.worker.node;
        if let Err(e) = self
            .channel
            .basic_cancel(node.into(), BasicCancelOptions::default())
            .await
        {
            warn!("cancelling the consumer: {e}");
        }
        let limit = u64::from(self.ctx.worker.queue.delivery_limit);
        let mut requeued = 0;
        let (kept, consumer) = (&mut self.kept, &mut self.consumer);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(Ok(delivery)) = consumer.next().await {
                if times_returned(&delivery).is_some_and(|n| n + 2 >= limit) {
                    kept.push_back(delivery);
                } else if nack_requeue(&delivery).await {
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

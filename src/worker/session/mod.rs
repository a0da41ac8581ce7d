//! The session loop: connect to the broker, consume, and reconnect with backoff whenever the
//! connection is lost, until a shutdown is asked ([`Sessions`]). Each [`Session`] is one
//! connection: declare, start the pidbox (remote control), the reaper, the scheduler, the
//! schedules' tick and the pruning of `[retention]`, take
//! deliveries while job slots are free (and record those it holds unstarted, `held`), and on
//! shutdown cancel, hand back what was prefetched and close after the last ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicNackOptions};
use tokio::sync::{watch, OnceCell, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::acks::Acks;
use super::context::{times_returned, SessionContext, WorkerState};
use super::delivery;
use super::flow::Wanted;
use super::pace::{Change, Pace};
use super::pidbox;
use super::retention;
use super::shutdown::Shutdown;
use super::slots::Slots;
use super::tick;
use super::{gates, outbox, republish};
use crate::amqp::{self, Publisher};

mod held;
mod orders;

use held::{Held, Taken};

/// Prefetched deliveries are handed back within this on shutdown; the broker returns the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why fair dispatch handed held jobs back, as their history says.
const HANDED_BACK: &str = "handed back to queue: every job slot of this worker busy";

/// A worker's broker sessions, one after another, and the jobs running over them.
pub(super) struct Sessions {
    worker: Arc<WorkerState>,
    /// The session consuming now; `None` once the connection was lost and shutdown came
    /// before a new one.
    current: Option<Session>,
    /// One per job that may run at a time (`concurrency`).
    /// (`concurrency`, or what `cm queue scale` asks)
    slots: Arc<Slots>,
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
        let slots = Arc::new(Slots::new(
            usize::from(worker.remote.flow.now().concurrency),
            worker.stats.clone(),
        ));
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
                    if let Some(lost) = self.current.take() {
                        // The broker returns them: no more held here.
                        lost.forget_held(&why);
                    }
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
            Some(s) => {
                s.drain("handed back to queue: the worker is stopping")
                    .await
            }
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
    /// `None` while paused: the consumer is cancelled, the messages wait in the broker.
    consumer: Option<lapin::Consumer>,
    /// The orders (pause, size) this session carries out now, and where they come from (`flow`).
    applied: Wanted,
    orders: watch::Receiver<Wanted>,
    /// What it prefetches, and when it hands prefetched jobs back (fair dispatch).
    pace: Pace,
    /// Deliveries held unstarted: taken in while every slot was busy, or kept back from a hand
    /// back (a quorum queue's message near its delivery limit). They run first.
    held: Held,
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
    /// Publishes again the THROTTLED jobs of this queue as their gates free; ends with it.
    releaser: tokio::task::AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reaper.abort();
        self.scheduler.abort();
        self.tick.abort();
        self.retention.abort();
        self.outbox.abort();
        self.releaser.abort();
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

/// What the consumer's stream gave: a delivery, or the end of the session. lapin reports a dead
/// peer (missed heartbeats) or a forced close as an error, then ends the stream: both mean
/// reconnect, never a silent stall.
fn delivered(next: Option<lapin::Result<Delivery>>) -> Result<Delivery, Ended> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(e)) => Err(Ended::Lost(e.to_string())),
        None => Err(Ended::Lost(
            "the broker cancelled the consumer (queue deleted?)".into(),
        )),
    }
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
        let mut orders = worker.remote.flow.watch();
        let applied = *orders.borrow_and_update();
        worker.stats.set_paused(applied.paused);
        worker.stats.set_desired(usize::from(applied.concurrency));
        let pace = orders::pace(worker, applied.concurrency);
        // A worker paused before it started (or reconnected) consumes nothing until resumed.
        let consumer = if applied.paused {
            None
        } else {
            Some(orders::consume(&channel, worker, pace.prefetch()).await?)
        };
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
        let releaser = tokio::spawn(gates::release(ctx.clone())).abort_handle();
        Ok(Self {
            conn,
            channel,
            consumer,
            applied,
            orders,
            pace,
            held: Held::new(),
            ctx,
            reaper,
            scheduler,
            tick,
            retention,
            outbox,
            releaser,
        })
    }

    /// Takes jobs while slots are free and no pause is asked, until a shutdown is asked or the
    /// connection's end.
    async fn consume(
        &mut self,
        slots: &Arc<Slots>,
        running: &mut JoinSet<()>,
        shutdown: &mut Shutdown,
    ) -> Ended {
        loop {
            if let Err(ended) = self.follow_orders(slots).await {
                return ended;
            }
            if self.applied.paused {
                // Nothing to take until the orders change.
                tokio::select! {
                    _ = self.orders.changed() => continue,
                    name = shutdown.requested() => return Ended::Shutdown(name),
                }
            }
            // A delivery is taken from the stream only when a slot is free, so on shutdown or
            // pause everything still in the stream was never started and can go straight back.
            let permit = match self.free_slot(slots, shutdown).await {
                Ok(Some(p)) => p,
                // New orders: follow them first.
                Ok(None) => continue,
                Err(ended) => return ended,
            };
            let Some(consumer) = self.consumer.as_mut() else {
                continue;
            };
            let taken = match self.held.pop(&self.ctx) {
                Some(taken) => taken,
                None => tokio::select! {
                    next = consumer.next() => match delivered(next) {
                        Ok(delivery) => Taken::new(delivery),
                        Err(lost) => return lost,
                    },
                    // The permit goes back: a pause or a smaller size may not want it used.
                    _ = self.orders.changed() => continue,
                    name = shutdown.requested() => return Ended::Shutdown(name),
                },
            };
            let (delivery, held) = (taken.delivery, taken.recorded.is_some());
            self.ctx.acks.taken(delivery.delivery_tag);
            // Before the job's task first runs: a commit the writer makes meanwhile already
            // waits for this job.
            let in_flight = self.ctx.worker.writer.in_flight();
            let ctx = self.ctx.clone();
            // Boxed: the job's future is large, and spawning moves it about a dozen times; a
            // box moves as a pointer.
            running.spawn(Box::pin(async move {
                delivery::handle(&ctx, delivery, held, permit, in_flight).await
            }));
            while running.try_join_next().is_some() {}
        }
    }

    /// A free job slot. Should every slot stay busy past the pace's patience, the prefetched
    /// deliveries go back to the queue first (another worker may be idle), and once a slot
    /// frees the session consumes again holding no more than it can start (`pace`).
    async fn free_slot(
        &mut self,
        slots: &Arc<Slots>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<OwnedSemaphorePermit>, Ended> {
        let asked = Instant::now();
        let acquire = slots.acquire();
        tokio::pin!(acquire);
        let patience = self.pace.patience();
        let waited_out = async move {
            match patience {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(waited_out);
        let first = loop {
            tokio::select! {
                permit = &mut acquire => break Some(permit),
                () = &mut waited_out => break None,
                () = self.held.look_due() => self.look_at_held().await?,
                _ = self.orders.changed() => return Ok(None),
                name = shutdown.requested() => return Err(Ended::Shutdown(name)),
            }
        };
        let permit = match first {
            Some(permit) => permit,
            None => {
                let handed = self.hand_back(HANDED_BACK).await;
                self.pace.handed_back();
                if handed > 0 {
                    info!(
                        "{handed} prefetched job(s) handed back to queue {}: every job slot busy over {:?}; consuming again with prefetch {} once a slot frees",
                        self.ctx.worker.queue.name,
                        patience.unwrap_or_default(),
                        self.pace.prefetch()
                    );
                }
                let permit = loop {
                    tokio::select! {
                        permit = &mut acquire => break permit,
                        () = self.held.look_due() => self.look_at_held().await?,
                        // No consumer now: following the orders consumes again.
                        _ = self.orders.changed() => return Ok(None),
                        name = shutdown.requested() => return Err(Ended::Shutdown(name)),
                    }
                };
                self.consume_again().await?;
                permit
            }
        };
        let permit = permit.map_err(|_| Ended::Shutdown("job slots closed"))?;
        if self.pace.slot_taken(asked.elapsed()) == Change::Raise {
            self.hand_back("handed back to queue: consuming again with the full prefetch")
                .await;
            self.consume_again().await?;
            info!(
                "jobs on queue {} are quick again: consuming with prefetch {} again",
                self.ctx.worker.queue.name,
                self.pace.prefetch()
            );
        }
        Ok(Some(permit))
    }

    /// Consumes again (after [`Session::hand_back`]) with the prefetch the pace says.
    async fn consume_again(&mut self) -> Result<(), Ended> {
        let consumer = orders::consume(&self.channel, &self.ctx.worker, self.pace.prefetch())
            .await
            .map_err(|e| Ended::Lost(format!("{e:#}")))?;
        self.consumer = Some(consumer);
        Ok(())
    }

    /// Cancels the consumer and hands back everything held unstarted (`why`): the session's
    /// warm shutdown, or a pause. Returns how many.
    async fn drain(&mut self, why: &str) -> usize {
        self.return_held(why, false).await
    }

    /// Cancels the consumer and returns what it prefetched and what is held to the queue
    /// (`why`), but for a quorum queue's message so near its delivery limit that one more
    /// return would dead-letter it (it stays held). Returns how many went back.
    async fn hand_back(&mut self, why: &str) -> usize {
        self.return_held(why, true).await
    }

    /// [`Session::hand_back`]; with `keep_near_limit` false, nothing stays held.
    async fn return_held(&mut self, why: &str, keep_near_limit: bool) -> usize {
        if let Some(mut consumer) = self.consumer.take() {
            let node = &*self.ctx.worker.node;
            if let Err(e) = self
                .channel
                .basic_cancel(node.into(), BasicCancelOptions::default())
                .await
            {
                warn!("cancelling the consumer: {e}");
            }
            let held = &mut self.held;
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while let Some(Ok(delivery)) = consumer.next().await {
                    held.push(Taken::new(delivery));
                }
            })
            .await;
            if drained.is_err() {
                warn!("prefetched jobs not handed back within {DRAIN_TIMEOUT:?}; the broker requeues them on close");
            }
        }
        let limit = u64::from(self.ctx.worker.queue.delivery_limit);
        let (kept, back): (Vec<Taken>, Vec<Taken>) =
            (self.held.take_all().into_iter()).partition(|t| {
                keep_near_limit && times_returned(&t.delivery).is_some_and(|n| n + 2 >= limit)
            });
        held::given_back(&self.ctx, &back, why).await;
        let mut requeued = 0;
        for taken in back {
            if nack_requeue(&taken.delivery).await {
                requeued += 1;
            }
        }
        self.held.keep(kept);
        requeued
    }

    /// While every slot is busy: takes in what the consumer has ready (it waits the same,
    /// held here rather than in lapin's buffer) and records what waited long as held here.
    async fn look_at_held(&mut self) -> Result<(), Ended> {
        if let Some(consumer) = self.consumer.as_mut() {
            while let Some(next) = futures_lite::future::poll_once(consumer.next()).await {
                self.held.push(Taken::new(delivered(next)?));
            }
        }
        self.held.record_overdue(&self.ctx);
        Ok(())
    }

    /// The connection is gone and with it what was held (the broker returns it to the queue):
    /// the jobs recorded as held here are PENDING again.
    fn forget_held(mut self, why: &str) {
        let lost = self.held.take_all();
        held::lost(&self.ctx, &lost, &format!("connection lost ({why})"));
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

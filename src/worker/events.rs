//! A worker's Celery events, off the hot path: a job hands its task event (already encoded) to
//! a bounded channel and goes on; one publisher task sends them on the session's events
//! channel, several at once as one `task.multi` message when they pile up, and adds the worker
//! events (online on each connection, a heartbeat every 2 s, offline at the end). When the
//! broker is slow or gone the channel fills and events are dropped and counted, never waited
//! for. Formats are `crate::remote::events`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::running::Running;
use crate::protocol::TaskMessage;
use crate::remote::clock::LamportClock;
use crate::remote::events::{self as wire, Origin, TaskEvent, WorkerFields};

/// Task events waiting for the publisher; past this a job's events are dropped.
const QUEUED_EVENTS: usize = 8192;
/// The most task events in one `task.multi` message (Celery's buffer holds 24; bigger batches
/// cost the broker less at thousands of jobs a second).
const BATCH: usize = 128;

struct Encoded {
    routing_key: &'static str,
    body: Vec<u8>,
}

enum Ctl {
    /// A new session's channel: say `worker-online` on it.
    Attach(Channel),
    /// `heartbeat` over the pidbox: one now.
    Heartbeat,
    /// The worker stops: what is queued, then `worker-offline`; answered once sent.
    Offline(oneshot::Sender<()>),
}

/// The jobs' and the remote control's side: cheap to call, never waits.
pub(super) struct Events {
    task_events: AtomicBool,
    dropped: AtomicU64,
    clock: Arc<LamportClock>,
    origin: Origin,
    tx: mpsc::Sender<Encoded>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Events {
    /// Starts the publisher task; task events are on from the start if `send_events`.
    pub(super) fn start(
        origin: Origin,
        clock: Arc<LamportClock>,
        running: Arc<Running>,
        send_events: bool,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let events = Arc::new(Self {
            task_events: AtomicBool::new(send_events),
            dropped: AtomicU64::new(0),
            clock,
            origin,
            tx,
            ctl,
        });
        tokio::spawn(publish(events.clone(), running, rx, ctl_rx));
        events
    }

    /// Whether task events go out now (`send_events`, `enable_events`).
    pub(super) fn enabled(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Turns task events on or off; returns whether that changed anything.
    pub(super) fn set_enabled(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed) != on
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues a task event if task events are on; drops it (counted) if the queue is full.
    pub(super) fn task(&self, event: &TaskEvent<'_>) {
        if !self.enabled() {
            return;
        }
        let body = wire::encode(
            event.kind(),
            &self.origin,
            epoch_seconds(),
            self.clock.forward(),
            event,
        );
        let queued = self.tx.try_send(Encoded {
            routing_key: event.routing_key(),
            body,
        });
        if queued.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `task-received` for `msg`, with the client's own reprs and ids from its headers.
    pub(super) fn received(&self, msg: &TaskMessage, props: &BasicProperties) {
        if !self.enabled() {
            return;
        }
        let header = |key: &str| match props.headers().as_ref()?.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        };
        let (args, kwargs);
        let args = match header("argsrepr") {
            Some(text) => text,
            None => {
                args = serde_json::to_string(&msg.args).unwrap_or_default();
                &args
            }
        };
        let kwargs = match header("kwargsrepr") {
            Some(text) => text,
            None => {
                kwargs = serde_json::to_string(&msg.kwargs).unwrap_or_default();
                &kwargs
            }
        };
        self.task(&TaskEvent::Received {
            uuid: &msg.id,
            name: &msg.task,
            args,
            kwargs,
            root_id: header("root_id"),
            parent_id: header("parent_id"),
            retries: msg.retries,
            eta: header("eta"),
            expires: header("expires"),
        });
    }

    /// A session's events channel: declares `celeryev` on it and hands it to the publisher.
    pub(super) async fn attach(&self, channel: Channel) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                wire::EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = self.ctl.send(Ctl::Attach(channel));
        Ok(())
    }

    pub(super) fn heartbeat_now(&self) {
        let _ = self.ctl.send(Ctl::Heartbeat);
    }

    /// Sends what is queued, then `worker-offline`; returns when they went out, or after
    /// `within` (a broker that stopped reading must not hold the worker's exit).
    pub(super) async fn offline(&self, within: Duration) {
        let (done, sent) = oneshot::channel();
        if self.ctl.send(Ctl::Offline(done)).is_ok() {
            let _ = tokio::time::timeout(within, sent).await;
        }
    }
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `/proc/loadavg`'s three figures, rounded as Celery rounds them; zeros where unreadable.
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, word) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = word
            .parse::<f64>()
            .map_or(0.0, |v| (v * 100.0).round() / 100.0);
    }
    out
}

/// Python's `platform.system()`: `Linux`.
fn system_name() -> String {
    let os = std::env::consts::OS;
    let mut chars = os.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

struct Publisher {
    events: Arc<Events>,
    running: Arc<Running>,
    channel: Option<Channel>,
    props: BasicProperties,
    sw_sys: String,
    /// Drops already warned about.
    dropped_seen: u64,
}

impl Publisher {
    async fn send(&mut self, routing_key: &str, body: &[u8]) -> bool {
        let Some(channel) = &self.channel else {
            return false;
        };
        let sent = channel
            .basic_publish(
                wire::EXCHANGE.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                self.props.clone(),
            )
            .await;
        match sent {
            Ok(_) => true,
            Err(e) => {
                // The session is going (or gone); the next one attaches a new channel.
                debug!("publishing event {routing_key}: {e}; no events until the next connection");
                self.channel = None;
                false
            }
        }
    }

    async fn worker_event(&mut self, kind: &str) {
        if self.channel.is_none() {
            return;
        }
        let fields = WorkerFields {
            freq: wire::HEARTBEAT_SECONDS,
            active: self.running.active(),
            processed: self.running.processed(),
            loadavg: load_average(),
            sw_ident: "cm",
            sw_ver: env!("CARGO_PKG_VERSION"),
            sw_sys: &self.sw_sys,
        };
        let ev = &self.events;
        let body = wire::encode(
            kind,
            &ev.origin,
            epoch_seconds(),
            ev.clock.forward(),
            &fields,
        );
        self.send(&wire::routing_key(kind), &body).await;
    }

    /// One event alone under its own routing key; several as one `task.multi` list.
    async fn task_events(&mut self, batch: &mut Vec<Encoded>) {
        let sent = match batch.as_slice() {
            [] => true,
            [one] => {
                let (key, body) = (one.routing_key, std::mem::take(&mut batch[0].body));
                self.send(key, &body).await
            }
            many => {
                let body = wire::batch(many.iter().map(|e| e.body.as_slice()));
                self.send(wire::MULTI_ROUTING_KEY, &body).await
            }
        };
        if !sent {
            let lost = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            self.events.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        batch.clear();
    }

    fn warn_of_drops(&mut self) {
        let dropped = self.events.dropped();
        if dropped > self.dropped_seen {
            warn!(
                "{} task event(s) dropped (broker slow or connection down); {dropped} since start",
                dropped - self.dropped_seen
            );
            self.dropped_seen = dropped;
        }
    }
}

async fn publish(
    events: Arc<Events>,
    running: Arc<Running>,
    mut rx: mpsc::Receiver<Encoded>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    let props = wire::properties(&events.origin.hostname);
    let mut p = Publisher {
        events,
        running,
        channel: None,
        props,
        sw_sys: system_name(),
        dropped_seen: 0,
    };
    let every = Duration::from_secs_f64(wire::HEARTBEAT_SECONDS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            // Worker events first: a heartbeat must not wait behind a flood of task events.
            biased;
            command = ctl.recv() => match command {
                Some(Ctl::Attach(channel)) => {
                    p.channel = Some(channel);
                    p.worker_event(wire::WORKER_ONLINE).await;
                    tick.reset();
                }
                Some(Ctl::Heartbeat) => p.worker_event(wire::WORKER_HEARTBEAT).await,
                Some(Ctl::Offline(done)) => {
                    loop {
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(e) => batch.push(e),
                                Err(_) => break,
                            }
                        }
                        if batch.is_empty() {
                            break;
                        }
                        p.task_events(&mut batch).await;
                    }
                    p.worker_event(wire::WORKER_OFFLINE).await;
                    // Close-ok comes after the broker took everything published before it.
                    if let Some(channel) = p.channel.take() {
                        let _ = channel.close(200, "worker offline".into()).await;
                    }
                    p.warn_of_drops();
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            _ = tick.tick() => {
                p.worker_event(wire::WORKER_HEARTBEAT).await;
                p.warn_of_drops();
            }
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                p.task_events(&mut batch).await;
            }
        }
    }
}

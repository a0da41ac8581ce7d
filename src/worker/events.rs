//! A worker's Celery events, off the hot path: a job writes its task event, encoded, onto the
//! end of the pending list and goes on; one publisher task sends what piled up, at most
//! [`LINGER`] later, as one `task.multi` message (or one event alone under its own routing
//! key), and adds the worker events (online on each connection, a heartbeat every 2 s,
//! offline at the end). When the broker is slow or gone the list fills and events are dropped
//! and counted, never waited for. Formats are `crate::celery::event_format`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, warn};

use super::running::Running;
use crate::celery::clock::LamportClock;
use crate::celery::event_format::{self as wire, Encoder, Origin, TaskEvent, WorkerFields};
use crate::celery::message::TaskMessage;

/// Task events waiting for the publisher; past this a job's events are dropped.
const QUEUED_EVENTS: usize = 8192;
/// How long the first pending event waits for others to join its message. One publish per
/// event cost a worker more than the events' encoding; Flower and `celery events` show a task
/// this much later.
const LINGER: Duration = Duration::from_millis(100);

/// Task events encoded and not yet sent: `[e1,e2,...`, the closing bracket still to come.
struct Pending {
    body: Vec<u8>,
    count: usize,
    /// The first event's routing key: a message of one event goes under it.
    first_key: &'static str,
}

impl Pending {
    const fn new() -> Self {
        Self {
            body: Vec::new(),
            count: 0,
            first_key: "",
        }
    }

    /// Where the next event is written, after its separator.
    fn next(&mut self, routing_key: &'static str) -> &mut Vec<u8> {
        if self.count == 0 {
            self.body.clear();
            self.body.push(b'[');
            self.first_key = routing_key;
        } else {
            self.body.push(b',');
        }
        self.count += 1;
        &mut self.body
    }
}

/// The message for `count` events taken from a [`Pending`]: one alone under its own routing
/// key, several as a JSON list under `task.multi` (what `EventReceiver` unpacks).
fn message<'a>(
    body: &'a mut Vec<u8>,
    count: usize,
    first_key: &'static str,
) -> (&'static str, &'a [u8]) {
    if count == 1 {
        (first_key, &body[1..])
    } else {
        body.push(b']');
        (wire::MULTI_ROUTING_KEY, &body[..])
    }
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
    encoder: Encoder,
    pending: Mutex<Pending>,
    /// Told when the first event lands in an empty pending list.
    ready: Notify,
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
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let events = Arc::new(Self {
            task_events: AtomicBool::new(send_events),
            dropped: AtomicU64::new(0),
            clock,
            encoder: Encoder::new(&origin),
            pending: Mutex::new(Pending::new()),
            ready: Notify::new(),
            ctl,
        });
        tokio::spawn(publish(events.clone(), running, origin.hostname, ctl_rx));
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

    /// Queues a task event if task events are on; drops it (counted) if the list is full.
    pub(super) fn task(&self, event: &TaskEvent<'_>) {
        if !self.enabled() {
            return;
        }
        let Ok(mut pending) = self.pending.lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if pending.count >= QUEUED_EVENTS {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.count == 0;
        let out = pending.next(event.routing_key());
        self.encoder.write(
            out,
            event.kind(),
            epoch_seconds(),
            self.clock.forward(),
            event,
        );
        drop(pending);
        if first {
            self.ready.notify_one();
        }
    }

    /// The pending events, swapped for `spare` (emptied); how many they are and the first's key.
    fn take(&self, spare: &mut Vec<u8>) -> (usize, &'static str) {
        spare.clear();
        let Ok(mut pending) = self.pending.lock() else {
            return (0, "");
        };
        std::mem::swap(&mut pending.body, spare);
        let count = std::mem::take(&mut pending.count);
        (count, pending.first_key)
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
                args = crate::celery::pyrepr::py_repr_list(&msg.args);
                &args
            }
        };
        let kwargs = match header("kwargsrepr") {
            Some(text) => text,
            None => {
                kwargs = crate::celery::pyrepr::py_repr_map(&msg.kwargs);
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
    /// The buffer the next pending list is swapped into.
    spare: Vec<u8>,
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
        let mut body = Vec::with_capacity(512);
        ev.encoder.write(
            &mut body,
            kind,
            epoch_seconds(),
            ev.clock.forward(),
            &fields,
        );
        self.send(&wire::routing_key(kind), &body).await;
    }

    /// Sends the pending task events as one message.
    async fn task_events(&mut self) {
        let mut body = std::mem::take(&mut self.spare);
        let (count, first_key) = self.events.take(&mut body);
        if count > 0 {
            let (key, message) = message(&mut body, count, first_key);
            if !self.send(key, message).await {
                let lost = u64::try_from(count).unwrap_or(u64::MAX);
                self.events.dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        self.spare = body;
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
    hostname: String,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    let mut p = Publisher {
        events,
        running,
        channel: None,
        props: wire::properties(&hostname),
        sw_sys: system_name(),
        spare: Vec::new(),
        dropped_seen: 0,
    };
    let every = Duration::from_secs_f64(wire::HEARTBEAT_SECONDS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = p.events.clone();
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
                    p.task_events().await;
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
            () = events.ready.notified() => {
                // Events that come meanwhile join this message; an offline asked for meanwhile
                // is answered next, and sends whatever came after.
                tokio::time::sleep(LINGER).await;
                p.task_events().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn written(pending: &mut Pending, key: &'static str, uuid: &str) {
        let out = pending.next(key);
        out.extend_from_slice(format!(r#"{{"uuid":"{uuid}"}}"#).as_bytes());
    }

    #[test]
    fn one_event_goes_alone_under_its_own_key() {
        let mut p = Pending::new();
        written(&mut p, "task.started", "a");
        let (key, body) = message(&mut p.body, p.count, p.first_key);
        assert_eq!(key, "task.started");
        let e: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        assert_eq!(e["uuid"], "a");
    }

    #[test]
    fn several_events_go_as_one_list_and_the_next_list_starts_afresh() {
        let mut p = Pending::new();
        written(&mut p, "task.received", "a");
        written(&mut p, "task.started", "b");
        let (key, body) = message(&mut p.body, p.count, p.first_key);
        assert_eq!(key, wire::MULTI_ROUTING_KEY);
        let list: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        assert_eq!(list[1]["uuid"], "b");
        p.count = 0;
        written(&mut p, "task.succeeded", "c");
        let (key, body) = message(&mut p.body, p.count, p.first_key);
        assert_eq!(key, "task.succeeded");
        assert_eq!(body, br#"{"uuid":"c"}"#);
    }
}

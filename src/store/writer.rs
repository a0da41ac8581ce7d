//! Group commit: a worker's events queue up while one transaction is written, then go together.
//!
//! Events are applied in the order sent, so a job's final state is never stored before its steps.
//! `commit` resolves only once its event is durable: the worker acks after that, never before.
//! A worker's job log lines are flushed before each transaction (see [`crate::joblog`]).
//!
//! A transaction the disk has no room for is tried again, with backoff, until there is room (or
//! the worker stops): its jobs wait unacked meanwhile, and are neither lost nor run again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{batch, postgres, sqlite, Event, StoreError};

/// The most events one transaction takes; bounds the latency a big backlog adds.
const MAX_BATCH: usize = 2000;

/// How long a commit waits for more events to join it while the worker is busy (its last
/// transaction held several jobs, or other jobs are in its hands): under `cm launch` load a
/// worker's transactions hold several times more jobs, for less CPU per job; a job's ack comes
/// at most this much later. A job alone is committed at once: an idle worker's round trip is not
/// made longer for company that is not coming.
pub(super) const LINGER: Duration = Duration::from_millis(2);
/// The same on PostgreSQL, where each transaction costs more than on SQLite whatever it holds:
/// a round trip, the count triggers' statements, a WAL flush by the server; there, up to 15 ms
/// still lowers the server's CPU per job, 30 ms no longer does.
pub(super) const LINGER_POSTGRES: Duration = Duration::from_millis(15);

/// The first wait before a transaction the disk could not take is tried again; it doubles up
/// to [`ROOM_RETRY_MAX`], so that a disk freed is noticed within seconds, without a hot loop.
const ROOM_RETRY_FIRST: Duration = Duration::from_millis(250);
const ROOM_RETRY_MAX: Duration = Duration::from_secs(5);
/// While the disk stays full, its error is logged again this often, not at every try.
const ROOM_REMIND_EVERY: Duration = Duration::from_secs(30);

/// Where the writer's transactions go.
pub(super) enum Sink {
    Sqlite(sqlite::CommitWriter),
    Postgres(postgres::CommitWriter),
}

impl Sink {
    async fn write(&mut self, events: &[&Event]) -> Result<(), StoreError> {
        let commit = batch::plan(events);
        match self {
            Sink::Sqlite(w) => w.write(&commit).await,
            Sink::Postgres(w) => w.write(&commit).await,
        }
    }
}

struct Item {
    event: Event,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Item>,
    /// Set when the worker stops: a transaction waiting for room then fails with its error,
    /// so that its jobs go back to the queue before the worker exits.
    give_up: Arc<watch::Sender<bool>>,
    /// Jobs between their first event and their final commit ([`Writer::hold`]).
    in_flight: Arc<AtomicUsize>,
}

/// A job in the worker's hands until dropped: while others are, a commit waits for them.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item").field("event", &self.event).finish()
    }
}

impl Writer {
    /// A commit waits up to `linger` for more events while more jobs are held than wait for
    /// their commit, unless `enough` events in the batch already wait for it.
    pub(super) fn spawn(sink: Sink, enough: usize, linger: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (give_up, patience) = watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let company = Company {
            enough: enough.max(1),
            linger,
            in_flight: in_flight.clone(),
        };
        tokio::spawn(run(sink, rx, patience, company));
        Self {
            tx,
            give_up: Arc::new(give_up),
            in_flight,
        }
    }

    /// Marks a job as in hand until the guard drops: from its first event to its final commit.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// Stops waiting for room on a full disk: the waiting commit, and every later one the disk
    /// cannot take, fail at once with [`StoreError::Full`].
    pub fn give_up_waiting(&self) {
        self.give_up.send_replace(true);
    }

    /// Queues an event without waiting (a step between STARTED and the final state).
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(Item { event, done: None });
    }

    /// Queues an event and waits until it, and everything sent before it, is committed.
    pub async fn commit(&self, event: Event) -> Result<(), StoreError> {
        let (done, stored) = oneshot::channel();
        self.tx
            .send(Item {
                event,
                done: Some(done),
            })
            .map_err(|_| StoreError::WriterGone("channel closed".into()))?;
        // The commit's own error (busy, unreachable, ...) as it was; gone only if it is gone.
        stored
            .await
            .unwrap_or_else(|_| Err(StoreError::WriterGone("dropped the event".into())))
    }
}

/// When a commit waits for others to join it.
struct Company {
    enough: usize,
    linger: Duration,
    in_flight: Arc<AtomicUsize>,
}

async fn run(
    mut sink: Sink,
    mut rx: mpsc::UnboundedReceiver<Item>,
    mut patience: watch::Receiver<bool>,
    company: Company,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Whether the last transaction held several commits: under load the next deliveries are
    // on their way from the broker before anyone holds them.
    let mut busy = false;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut rx, &mut batch, &company, busy).await;
        busy = batch.iter().filter(|i| i.done.is_some()).count() > 1;
        // Each event's log line was queued before the event was sent: out with them first, so
        // a state anyone can read from the store already has its line in the worker's log.
        crate::joblog::flush();
        let events: Vec<&Event> = batch.iter().map(|i: &Item| &i.event).collect();
        let outcome = write_when_room(&mut sink, &events, &mut patience).await;
        drop(events);
        if let Err(e) = &outcome {
            tracing::error!("status store: writing {} event(s) failed: {e}", batch.len());
        }
        for item in batch.drain(..) {
            if let Some(done) = item.done {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// Writes `events`; while the disk is full, waits and tries again (logging why once, then every
/// [`ROOM_REMIND_EVERY`]) until it has room or the worker gives up waiting. Any other error is
/// returned at once: busy and unreachable stores have their own handling (the delivery goes back
/// to the queue).
async fn write_when_room(
    sink: &mut Sink,
    events: &[&Event],
    patience: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut wait = ROOM_RETRY_FIRST;
    // When the disk was first found full, and when that was last said.
    let mut full_since: Option<(Instant, Instant)> = None;
    loop {
        let outcome = sink.write(events).await;
        let e = match (&outcome, full_since) {
            (Err(e @ StoreError::Full { .. }), _) if !*patience.borrow() => e,
            (Ok(()), Some((first, _))) => {
                tracing::info!(
                    "status store has room again after {:.1}s: the waiting job states are stored, their jobs acked",
                    first.elapsed().as_secs_f64()
                );
                return outcome;
            }
            _ => return outcome,
        };
        let now = Instant::now();
        match full_since {
            None => {
                tracing::error!(
                    "{e}; {} event(s) wait unstored and their jobs unacked: trying again until it has room",
                    events.len()
                );
                full_since = Some((now, now));
            }
            Some((first, told)) if now - told >= ROOM_REMIND_EVERY => {
                tracing::error!(
                    "{e}; still, {:.0}s on: {} event(s) wait unstored and their jobs unacked",
                    (now - first).as_secs_f64(),
                    events.len()
                );
                full_since = Some((first, now));
            }
            Some(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Told to give up (or every handle is gone, which ends the wait too): the next
            // failure is returned.
            changed = patience.changed() => if changed.is_err() { return outcome },
        }
        wait = (wait * 2).min(ROOM_RETRY_MAX);
    }
}

/// Adds to `batch` what arrives within the linger, while the worker is `busy` or more jobs are
/// in hand than wait in it, until `enough` events in it wait for their commit (or it is full).
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Item>,
    batch: &mut Vec<Item>,
    company: &Company,
    busy: bool,
) {
    let deadline = tokio::time::Instant::now() + company.linger;
    let mut waiting = batch.iter().filter(|i| i.done.is_some()).count();
    let others_coming =
        |waiting: usize| busy || company.in_flight.load(Ordering::Relaxed) > waiting;
    if !others_coming(waiting) {
        // The jobs woken meanwhile run first: a worker with deliveries at hand takes the next
        // one now, and holds it, before this commit decides it is alone.
        tokio::task::yield_now().await;
    }
    while waiting < company.enough && batch.len() < MAX_BATCH && others_coming(waiting) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => {
                waiting += usize::from(item.done.is_some());
                batch.push(item);
            }
            // The linger is over, or every sender is gone.
            Ok(None) | Err(_) => break,
        }
    }
}

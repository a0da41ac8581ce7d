//! The deliveries a session holds but has not started, and the store's record of them.
//!
//! A worker prefetches; a prefetched job waits for a free job slot. While it waits in lapin's
//! buffer nobody sees it: the store says PENDING with no worker, though the broker will give it
//! to no one else. So while every slot is busy the session looks at what it holds every
//! [`LOOK_EVERY`]: it takes what the consumer has ready into [`Held`], and records each delivery
//! that has waited over [`RECORD_AFTER`] as RECEIVED by this worker (its job "held by worker W").
//! Millisecond jobs start long before that, so the hot path writes nothing more; a job held
//! behind a long one is in the store within about a second and a half.
//!
//! What the session gives back (fair dispatch, a pause, a stop) is recorded PENDING again
//! (`GivenBack`, which changes only this worker's hold) and committed before the message goes
//! back, so another worker's RECEIVED cannot come first and be undone.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use tokio::time::{interval_at, Interval, MissedTickBehavior};
use tracing::warn;

use crate::store::SharedText;
use crate::worker::context::SessionContext;
use crate::worker::delivery;

/// A delivery held unstarted this long is recorded as held by this worker.
const RECORD_AFTER: Duration = Duration::from_secs(1);
/// How often a session with every slot busy looks at what it holds.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// The longest a hand back waits for the store to record its held jobs PENDING again.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(2);

/// One delivery the session holds, not started.
pub(super) struct Taken {
    pub(super) delivery: Delivery,
    since: Instant,
    /// The job whose RECEIVED by this worker was recorded while it waited, and its key in
    /// `inspect reserved`.
    pub(super) recorded: Option<(SharedText, u64)>,
    /// Looked at for recording already (a message that is no job is left to the run's screen).
    looked: bool,
}

impl Taken {
    pub(super) fn new(delivery: Delivery) -> Self {
        Self {
            delivery,
            since: Instant::now(),
            recorded: None,
            looked: false,
        }
    }
}

/// What a session holds unstarted, oldest first: taken in from the consumer while every slot was
/// busy, or kept back from a hand back (a quorum queue's message near its delivery limit). It
/// runs before anything the consumer has now.
pub(super) struct Held {
    queue: VecDeque<Taken>,
    look: Interval,
}

impl Held {
    pub(super) fn new() -> Self {
        let mut look = interval_at(tokio::time::Instant::now() + LOOK_EVERY, LOOK_EVERY);
        look.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            queue: VecDeque::new(),
            look,
        }
    }

    /// Ready when it is time to look at what is held.
    pub(super) async fn look_due(&mut self) {
        self.look.tick().await;
    }

    pub(super) fn push(&mut self, taken: Taken) {
        self.queue.push_back(taken);
    }

    /// The oldest held delivery, to start now: no longer reserved.
    pub(super) fn pop(&mut self, ctx: &SessionContext) -> Option<Taken> {
        let taken = self.queue.pop_front()?;
        unreserve(ctx, std::slice::from_ref(&taken));
        Some(taken)
    }

    /// Everything held, oldest first; none left.
    pub(super) fn take_all(&mut self) -> Vec<Taken> {
        self.queue.drain(..).collect()
    }

    /// Holds `kept` again, first.
    pub(super) fn keep(&mut self, kept: Vec<Taken>) {
        let newer = std::mem::replace(&mut self.queue, kept.into());
        self.queue.extend(newer);
    }

    /// Records as RECEIVED by this worker each held job that has waited over [`RECORD_AFTER`]
    /// (queued for the store, not waited for). A second copy of a job held already is left
    /// unrecorded: its own run finds it taken.
    pub(super) fn record_overdue(&mut self, ctx: &SessionContext) {
        let mut ids: BTreeSet<SharedText> = (self.queue.iter())
            .filter_map(|t| t.recorded.as_ref().map(|(id, _)| id.clone()))
            .collect();
        for t in &mut self.queue {
            if t.looked || t.since.elapsed() < RECORD_AFTER {
                continue;
            }
            t.looked = true;
            t.recorded = delivery::record_held(ctx, &t.delivery, &mut ids);
        }
    }
}

/// Records PENDING again, before their messages go back to the queue, the jobs of `given` that
/// were recorded as held here. Waits for the commit at most [`GIVE_BACK_WAIT`]: a store that
/// does not answer must not keep the messages from the idle workers.
pub(super) async fn given_back(ctx: &SessionContext, given: &[Taken], why: &str) {
    let w = &*ctx.worker;
    unreserve(ctx, given);
    let ids = recorded(given);
    let Some((last, rest)) = ids.split_last() else {
        return;
    };
    for id in rest {
        w.writer.send(delivery::given_back(w, id, why));
    }
    let committed = w.writer.commit(delivery::given_back(w, last, why));
    match tokio::time::timeout(GIVE_BACK_WAIT, committed).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("recording held jobs as given back: {e}; the store shows them held until another worker takes them"),
        Err(_) => warn!("recording held jobs as given back took over {GIVE_BACK_WAIT:?}; handing them back meanwhile"),
    }
}

/// Records PENDING again the jobs of `lost` recorded as held here, without waiting: the
/// broker has their messages back already (the connection is gone).
pub(super) fn lost(ctx: &SessionContext, lost: &[Taken], why: &str) {
    let w = &*ctx.worker;
    unreserve(ctx, lost);
    for id in recorded(lost) {
        w.writer.send(delivery::given_back(w, &id, why));
    }
}

/// The ids recorded as held, collected: an iterator's closure held across an await would make
/// the worker's future not `Send` for every lifetime.
fn recorded(given: &[Taken]) -> Vec<SharedText> {
    (given.iter())
        .filter_map(|t| t.recorded.as_ref().map(|(id, _)| id.clone()))
        .collect()
}

/// Out of `inspect reserved`: started, or no longer held.
fn unreserve(ctx: &SessionContext, taken: &[Taken]) {
    for (_, key) in taken.iter().filter_map(|t| t.recorded.as_ref()) {
        ctx.worker.remote.running.unreserve(*key);
    }
}

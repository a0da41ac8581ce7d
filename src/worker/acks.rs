//! A worker's acks, batched: one `basic.ack` with `multiple` settles every finished delivery
//! below the oldest one still running.
//!
//! A group commit finishes many jobs at once; acking them one frame each cost the broker about
//! as much as delivering them. A multiple ack covers *every* unacked tag up to its own, so it is
//! only sent up to the lowest tag still open (taken and not settled), and tags are never acked
//! twice: the broker closes the channel on an unknown tag, and lapin's per-delivery acker does not
//! know what a multiple ack covered (NOTES-lapin). Finished tags above a running one are acked
//! one by one at once, so a long job never holds back the acks of quick ones.

use std::collections::BTreeSet;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

enum Settle {
    /// The consume loop took this delivery; it stays open until acked or nacked.
    Taken(u64),
    Ack(u64),
    /// Back to the queue (`requeue`) or dropped.
    Nack(u64, bool),
    /// Answered once everything sent before it went out.
    Flush(oneshot::Sender<()>),
}

/// The sending side; clones go to the job handlers. Settling happens in one task, in the order
/// the calls were made, so a nack is on the wire before any multiple ack that passes its tag.
#[derive(Clone)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Settle>,
}

impl Acks {
    /// Starts the task that settles deliveries of `channel`.
    pub fn spawn(channel: Channel) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, rx));
        Self { tx }
    }

    /// Call before the job starts: until it is settled, no multiple ack passes its tag.
    pub fn taken(&self, tag: u64) {
        let _ = self.tx.send(Settle::Taken(tag));
    }

    pub fn ack(&self, tag: u64) {
        let _ = self.tx.send(Settle::Ack(tag));
    }

    pub fn nack(&self, tag: u64, requeue: bool) {
        let _ = self.tx.send(Settle::Nack(tag, requeue));
    }

    /// Returns once every ack and nack asked for before this call was sent to the broker: a
    /// worker calls it before closing the channel (an ack after the close is lost).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Settle::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Tags taken and not settled, and tags finished but not yet acked.
#[derive(Default)]
struct Tracker {
    open: BTreeSet<u64>,
    finished: BTreeSet<u64>,
}

/// What to send for the finished tags: at most one multiple ack, then single ones.
#[derive(Debug, PartialEq)]
struct Plan {
    multiple: Option<u64>,
    single: Vec<u64>,
}

impl Tracker {
    fn taken(&mut self, tag: u64) {
        self.open.insert(tag);
    }

    fn settled(&mut self, tag: u64) {
        self.open.remove(&tag);
    }

    fn finished(&mut self, tag: u64) {
        self.open.remove(&tag);
        self.finished.insert(tag);
    }

    /// Every finished tag below the lowest open one goes in one multiple ack; the rest singly.
    fn plan(&mut self) -> Plan {
        let below = match self.open.first() {
            Some(&low) => {
                let above = self.finished.split_off(&low);
                std::mem::replace(&mut self.finished, above)
            }
            None => std::mem::take(&mut self.finished),
        };
        Plan {
            multiple: below.last().copied(),
            single: std::mem::take(&mut self.finished).into_iter().collect(),
        }
    }
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut tracker = Tracker::default();
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for settle in batch.drain(..) {
            match settle {
                Settle::Taken(tag) => tracker.taken(tag),
                Settle::Ack(tag) => tracker.finished(tag),
                Settle::Nack(tag, requeue) => {
                    tracker.settled(tag);
                    let opts = BasicNackOptions {
                        requeue,
                        multiple: false,
                    };
                    if let Err(e) = channel.basic_nack(tag, opts).await {
                        error!("returning delivery {tag}: {e}; the broker requeues it when the channel closes");
                    }
                }
                Settle::Flush(done) => flushes.push(done),
            }
        }
        let plan = tracker.plan();
        if plan.multiple.is_some() || !plan.single.is_empty() {
            // An acked job's lines are in the log: a crash after this loses none of them.
            crate::joblog::flush();
        }
        for (tag, multiple) in plan
            .multiple
            .map(|t| (t, true))
            .into_iter()
            .chain(plan.single.into_iter().map(|t| (t, false)))
        {
            if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                error!("acking delivery {tag} (multiple: {multiple}): {e}; the broker will deliver it again");
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(t: &mut Tracker) -> (Option<u64>, Vec<u64>) {
        let p = t.plan();
        (p.multiple, p.single)
    }

    #[test]
    fn finished_tags_below_every_open_one_go_in_one_multiple_ack() {
        let mut t = Tracker::default();
        (1..=5).for_each(|tag| t.taken(tag));
        [1, 2, 3].into_iter().for_each(|tag| t.finished(tag));
        assert_eq!(plan(&mut t), (Some(3), vec![]));
        assert_eq!(plan(&mut t), (None, vec![]), "nothing is acked twice");
    }

    #[test]
    fn a_running_job_holds_no_ack_back_and_is_never_covered() {
        let mut t = Tracker::default();
        (1..=4).for_each(|tag| t.taken(tag));
        [1, 3, 4].into_iter().for_each(|tag| t.finished(tag));
        // 2 still runs: a multiple ack at 3 or 4 would ack it too.
        assert_eq!(plan(&mut t), (Some(1), vec![3, 4]));
        t.finished(2);
        assert_eq!(plan(&mut t), (Some(2), vec![]));
    }

    #[test]
    fn a_nacked_tag_no_longer_holds_back_the_ones_above_it() {
        let mut t = Tracker::default();
        (1..=3).for_each(|tag| t.taken(tag));
        t.settled(1);
        [2, 3].into_iter().for_each(|tag| t.finished(tag));
        assert_eq!(plan(&mut t), (Some(3), vec![]));
    }
}

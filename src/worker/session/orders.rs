//! A session carrying out the flow-control orders (`worker::flow`): a pause cancels the
//! consumer and hands back what was prefetched (the messages wait in the broker); a resume
//! consumes again; a new size resizes the job slots and consumes anew with the prefetch of the
//! new size (RabbitMQ applies `basic.qos` to new consumers only), the fair-dispatch pace
//! starting over from it.

use anyhow::Context;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tracing::info;

use super::{Ended, Session};
use crate::worker::context::WorkerState;
use crate::worker::pace::Pace;
use crate::worker::slots::Slots;

/// The fair-dispatch pace of `slots` job slots: the prefetch the config's ratio gives them.
pub(super) fn pace(worker: &WorkerState, slots: u16) -> Pace {
    Pace::new(
        worker.remote.flow.prefetch_for(slots),
        slots,
        worker.queue.hand_back_after,
    )
}

/// Sets the prefetch and consumes the worker's queue on `channel`.
pub(super) async fn consume(
    channel: &lapin::Channel,
    worker: &WorkerState,
    prefetch: u16,
) -> anyhow::Result<lapin::Consumer> {
    let queue = &worker.queue.name;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("setting the prefetch (basic.qos)")?;
    channel
        .basic_consume(
            queue.as_str().into(),
            (&*worker.node).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming from queue {queue}"))
}

impl Session {
    /// Carries out the orders if they changed, or consumes again if it should and does not.
    pub(super) async fn follow_orders(&mut self, slots: &Slots) -> Result<(), Ended> {
        let wanted = *self.orders.borrow_and_update();
        let unconsumed = !wanted.paused && self.consumer.is_none();
        if wanted == self.applied && !unconsumed {
            return Ok(());
        }
        let w = self.ctx.worker.clone();
        let queue = &w.queue.name;
        let slots_now = usize::from(wanted.concurrency);
        slots.resize(slots_now);
        w.stats.set_desired(slots_now);
        let resized = wanted.concurrency != self.applied.concurrency;
        if resized {
            self.pace = pace(&w, wanted.concurrency);
        }
        if wanted.paused || (resized && self.consumer.is_some()) {
            let why = if wanted.paused {
                "handed back to queue: paused"
            } else {
                "handed back to queue: resized"
            };
            let handed_back = self.drain(why).await;
            if wanted.paused && !self.applied.paused {
                info!("paused: taking no new jobs from queue {queue} ({handed_back} prefetched handed back; running ones finish)");
            }
        }
        if !wanted.paused && self.consumer.is_none() {
            self.consume_again().await?;
            if self.applied.paused {
                info!("resumed: consuming from queue {queue} again");
            }
        }
        if resized {
            info!(
                "concurrency {} -> {} (prefetch {})",
                self.applied.concurrency,
                wanted.concurrency,
                self.pace.prefetch()
            );
        }
        w.stats.set_paused(wanted.paused);
        self.applied = wanted;
        Ok(())
    }
}

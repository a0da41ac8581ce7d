//! One delivery, through its steps in the order it meets them. Each step hands the job on or
//! ends the delivery with a [`settle::Settlement`], which `settle` alone carries out:
//!
//! - `screen`: is it a job? Too big, returned too often, not a task message, an unknown task
//!   or arguments that do not bind: a dead letter, with why.
//! - `admit`: may it start now? Already final, revoked, expired: it ends unrun; due later:
//!   held SCHEDULED in the store, and acked.
//! - `run`: RECEIVED, STARTED, the job kind's steps; leased past `lease_after_seconds`.
//! - `settle`: its end committed (with what a final state releases), then its message acked,
//!   returned, dead-lettered or published again.
//!
//! `outcome` builds every store event of a job, and its one end with what is told of it.

mod admit;
mod canvas;
mod outcome;
mod run;
mod screen;
mod settle;

use std::collections::BTreeSet;

use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;

use super::context::{SessionContext, WorkerState};
use super::running::RunningJob;
use crate::store::{self, Event, InFlight, SharedText};

/// Takes one delivery through the steps. `held`: its RECEIVED by this worker was recorded
/// while it waited for a slot ([`record_held`]). `slot`: its job slot, held until the job ran
/// (or, for a delivery that never runs, until it is settled). `in_flight`: held from when the
/// delivery was taken until its job's end is committed, so that commits meanwhile wait for
/// it.
pub(super) async fn handle(
    ctx: &SessionContext,
    delivery: Delivery,
    held: bool,
    slot: OwnedSemaphorePermit,
    in_flight: InFlight,
) {
    let received = match screen::screen(ctx, &delivery) {
        Ok(received) => received,
        Err(refused) => return settle::settle(ctx, &delivery, refused, in_flight).await,
    };
    if let Some(not_now) = admit::admit(ctx, &delivery, &received, held).await {
        return settle::settle(ctx, &delivery, not_now, in_flight).await;
    }
    let ended = run::run(ctx, &delivery, received, held, slot).await;
    settle::settle(ctx, &delivery, ended, in_flight).await;
}

/// Records the job of `delivery`, which this worker holds prefetched while every job slot is
/// busy, as RECEIVED by it (queued for the store); its run then records no RECEIVED of its own.
/// It shows in `inspect reserved` until [`Running::unreserve`](super::running::Running::unreserve)
/// with the key returned beside its id (also added to `recorded`). `None` for a message that is
/// no job (its run dead-letters it) or a job in `recorded` already (a second copy: its run finds
/// it taken).
pub(super) fn record_held(
    ctx: &SessionContext,
    delivery: &Delivery,
    recorded: &mut BTreeSet<SharedText>,
) -> Option<(SharedText, u64)> {
    let received = screen::screen(ctx, delivery).ok()?;
    if !recorded.insert(received.id.clone()) {
        return None;
    }
    let w = &*ctx.worker;
    let now = store::now_ms();
    let parts = (&*received.msg, &received.job, &*received.id);
    run::record_received(w, delivery, parts, now, "; held: every job slot busy");
    let reserved = w
        .remote
        .running
        .reserve(RunningJob::of(received.msg.clone(), delivery, now));
    Some((received.id, reserved))
}

/// The job `id`, held here unstarted, given back to the queue (`why`): PENDING again.
pub(super) fn given_back(w: &WorkerState, id: &str, why: &str) -> Event {
    outcome::given_back(w, id, why)
}

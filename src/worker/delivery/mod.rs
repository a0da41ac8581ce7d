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

use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;

use super::context::SessionContext;
use crate::store::InFlight;

/// Takes one delivery through the steps. `slot`: its job slot, held until the job ran (or,
/// for a delivery that never runs, until it is settled). `in_flight`: held from when the
/// delivery was taken until its job's end is committed, so that commits meanwhile wait for
/// it.
pub(super) async fn handle(
    ctx: &SessionContext,
    delivery: Delivery,
    slot: OwnedSemaphorePermit,
    in_flight: InFlight,
) {
    let received = match screen::screen(ctx, &delivery) {
        Ok(received) => received,
        Err(refused) => return settle::settle(ctx, &delivery, refused, in_flight).await,
    };
    if let Some(not_now) = admit::admit(ctx, &delivery, &received).await {
        return settle::settle(ctx, &delivery, not_now, in_flight).await;
    }
    let ended = run::run(ctx, &delivery, received, slot).await;
    settle::settle(ctx, &delivery, ended, in_flight).await;
}

//! What a client of the queue does, whichever front end asks (the CLI, the web, `/api/`):
//!
//! - `flow`: pause, resume and scale of a queue's workers, kept in the store; what they show.
//! - `lookup`: a job by its whole id or a unique start or end of one.
//! - `outbox`: publishing the jobs the store released (their parents ended, a retry).
//! - `publish`: the one way to publish: a `Publisher` stores a batch of jobs PENDING and
//!   publishes it confirmed.
//! - `results`: the final states a waiting publisher is told (`--wait`).
//! - `retry`: a failed job run again as a new, linked job; the children it ended re-armed.
//! - `revoke`: revokes kept in the store, so that every worker sees them.
//! - `schedules`: the schedules listed with their store state; pause, resume, a run now.

pub mod flow;
pub mod lookup;
pub mod outbox;
pub mod publish;
pub mod results;
pub mod retry;
pub mod revoke;
pub mod schedules;

//! One worker, in floors. In the order a message meets them:
//!
//! - `setup`: the process (`run`, `cm worker NAME`): readiness pipe, pid lock, dropping root,
//!   runtime, signals (`signals`), stats file; it wraps `serve`.
//! - `serve`: wiring and warm shutdown: the store, what lasts across sessions, the stop
//!   grace. [`serve`] runs a worker inside the caller's runtime (tests, embedding).
//! - `session`: the session loop: connect, consume while job slots are free, reconnect with
//!   backoff; each session starts its pidbox (remote control), reaper and scheduler.
//! - `delivery`: one message's pipeline, a file per step: `screen` (is it a job?) → `admit`
//!   (may it start now?) → `run` → `settle` (the one place that says what happens to the
//!   message); `outcome` builds every store event of a job.
//!
//! What the floors call, each one concern that calls none of them back:
//!
//! - `republish`: jobs the store holds go back to the broker: the eta scheduler and the
//!   reaper of lapsed leases.
//! - `outbox`: jobs the store released (a parent's end, a retry), published to their queues.
//! - `lease`: jobs longer than the broker allows, held by a lease in the store and renewed.
//! - `revokes`: the revoked ids, polled from the store; a revoked job never runs.
//! - `acks`: batched acks that never cover a running delivery.
//! - `remote`, `pidbox`, `events`: what the worker tells Celery's tools and `cm queue status
//!   --all`, and answers over remote control; `running`: the jobs running now.
//! - `flow`: pause, resume and live concurrency, ordered through the store (`cm queue pause`,
//!   Celery's `cancel_consumer`, `pool_grow`) and followed by the session; `slots`: the job
//!   slots, whose number changes while the worker runs.
//! - `stats`: jobs done and failed; `shutdown`: what asks for a warm shutdown.
//! - `context`: below all of these: the worker's state, a session's context, the job lines
//!   of the log. It imports none of the floors.
//!
//! How a job runs is `crate::jobs`' business: command tasks run there, each in a process
//! group of its own under the worker (`control::group`).

mod acks;
mod context;
mod delivery;
mod events;
mod flow;
mod gates;
mod lease;
mod outbox;
mod pace;
mod pidbox;
mod remote;
mod republish;
mod retention;
mod revokes;
mod running;
mod serve;
mod session;
mod setup;
mod shutdown;
mod signals;
mod slots;
mod stats;
mod tick;

pub use serve::serve;
pub use setup::run;

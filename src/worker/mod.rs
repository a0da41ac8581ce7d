//! One worker process, in rooms:
//!
//! - `setup`: the process: readiness pipe, pid lock, dropping root, runtime, exit code.
//! - `signals`: SIGTERM/SIGINT start a warm shutdown; SIGHUP reopens the log.
//! - `serve`: its life over broker sessions: first connect, `ready`, reconnect with backoff,
//!   warm shutdown.
//! - `session`: one connection: declare, consume while job slots are free, drain, close.
//! - `delivery`: one message: decode → record → run → settle (or dead-letter, or give back).
//! - `outcome`: a job's one outcome, and its store event, log line and follow-up.
//! - `revokes`: the revoked ids, polled from the store; a revoked job is settled, not run.
//! - `acks`: batched acks that never cover a running delivery.
//! - `lease`: jobs longer than the broker allows: acked early, held by a lease in the store,
//!   renewed, and published again by a reaper when their worker died.
//! - `schedule`: a message's eta and expires: a job not due yet is held SCHEDULED by the store
//!   and published again when due by each session's scheduler; an expired one never runs.
//! - `remote`: what the worker answers about itself over the broker: `cm queue status --all`'s
//!   ping and Celery's remote control (pidbox), whose wire formats are `crate::celery`.
//! - `pidbox`: the remote control's queue, consumer and replies.
//! - `events`: Celery's worker and task events, queued by the jobs, sent by one publisher task.
//! - `running`: the jobs running now (`celery inspect active`) and the counts per task.
//! - `stats`: jobs done and failed, and the stats file `cm queue status` reads.
//!
//! How a job runs is `crate::jobs`' business: command tasks run there, each in a process
//! group of its own under the worker (`control::group`).

mod acks;
mod delivery;
mod events;
mod lease;
mod outcome;
mod pidbox;
mod remote;
mod revokes;
mod running;
mod schedule;
mod serve;
mod session;
mod setup;
mod signals;
mod stats;

pub use setup::run;

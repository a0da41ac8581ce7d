//! cm: an ops CLI, worker and web console for a RabbitMQ job queue (Celery protocol v2).
//!
//! The crate in the order a job meets it:
//!
//! - `cli`, `commands`: the `cm` command line (clap types) and each command family's work.
//! - `config`: `fabfile.toml`, read once into types (queues, workers, tasks, URLs, limits).
//! - `client`: what a front end does with jobs: publish a batch, wait for results, revoke.
//! - `celery`: Celery's wire formats: the task message, remote control, events, Python reprs.
//! - `amqp`: RabbitMQ through lapin: connect (failover over a list), declare, publish confirmed.
//! - `control`: the supervisor of what cm starts detached: workers, the web, jobs' commands.
//! - `worker`: one worker process, in floors: the process (`setup`), wiring and warm shutdown
//!   (`serve`), the broker session (`session`), one delivery's pipeline (`delivery`: screen →
//!   admit → run → settle), all over the state they share (`context`).
//! - `jobs`: the job kinds and how each runs (the simulations, command tasks).
//! - `schedules`: `[schedules.NAME]`'s slots and what a tick fires of them (no I/O).
//! - `store`: the status store, SQLite or PostgreSQL: job states, history, revokes, leases.
//! - `web`: the web console and `/api/`.
//! - `joblog`: the worker's job lines (`[time] node job id task: STATE`), batched.
//! - `output`, `exit`: what a command prints, and its exit code.

pub mod amqp;
pub mod celery;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod control;
pub mod exit;
pub mod joblog;
pub mod jobs;
pub mod output;
pub mod schedules;
pub mod store;
pub mod web;
pub mod worker;

//! What Celery speaks, as wire formats (no I/O): the task message (protocol v2), and what
//! Celery's own tools speak with a worker: the remote control
//! ("pidbox": `celery inspect`, `celery control`, Flower's inspector) and the events
//! (`celeryev`: Flower, `celery events`). Read from kombu's `pidbox.py` and `clocks.py`,
//! Celery's `worker/control.py`, `worker/heartbeat.py` and `events/`, Flower's `events.py` and
//! `inspector.py`. The worker's side (queues, consumers, the publisher task) is
//! `crate::worker::remote`.
//!
//! - `message`: a task message (protocol v2) and its errors; `encode`, `decode` (with its
//!   checks), the body read in one pass, the header values.
//! - `timestamp`: the ISO 8601 times of `eta` and `expires`.
//! - `pyrepr`: Python reprs (`argsrepr`, an exception's text).
//! - `clock`: the Lamport clock every reply and event carries.
//! - `control`: a remote-control (pidbox) request, whom it addresses, the reply's envelope.
//! - `replies`: what each method answers, in Celery's shapes.
//! - `rpc`: the rpc:// result backend's reply for a job that ended.
//! - `event_format`: worker and task events and their routing.

pub mod clock;
pub mod control;
pub mod event_format;
pub mod message;
pub mod pyrepr;
pub mod replies;
pub mod rpc;
pub mod timestamp;

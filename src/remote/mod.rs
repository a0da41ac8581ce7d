//! What Celery's own tools speak with a worker, as wire formats (no I/O): the remote control
//! ("pidbox": `celery inspect`, `celery control`, Flower's inspector) and the events
//! (`celeryev`: Flower, `celery events`). Read from kombu's `pidbox.py` and `clocks.py`,
//! Celery's `worker/control.py`, `worker/heartbeat.py` and `events/`, Flower's `events.py` and
//! `inspector.py`. The worker's side (queues, consumers, the publisher task) is
//! `crate::worker::remote`.
//!
//! - `clock`: the Lamport clock every reply and event carries.
//! - `pidbox`: a request, whom it addresses, the reply's envelope.
//! - `replies`: what each method answers, in Celery's shapes.
//! - `events`: worker and task events and their routing.

pub mod clock;
pub mod events;
pub mod pidbox;
pub mod replies;

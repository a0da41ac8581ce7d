//! Celery message protocol v2 over AMQP, JSON body: encode for publishers, decode for workers.
//!
//! Headers carry the task name and id; the body is `[args, kwargs, embed]`. This module holds
//! the message and its errors; `encode` writes it, `decode` reads it, `body` reads the body in
//! one pass and `headers` reads and writes the header values.

mod body;
mod decode;
mod encode;
mod headers;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use std::time::Duration;

use crate::celery::timestamp;

/// A task message as a worker sees it.
#[derive(Debug, Clone)]
pub struct TaskMessage {
    pub id: String,
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub retries: u32,
    /// Where a Celery client with the rpc:// backend waits for the result.
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// Not before this (ms since the epoch): the `eta` header, which is also how a Celery
    /// client sends a `countdown`.
    pub eta_ms: Option<i64>,
    /// Not after this (ms since the epoch): the `expires` header. Received later, the job is
    /// REVOKED unrun, as a Celery worker does.
    pub expires_ms: Option<i64>,
    /// The `timelimit` header.
    pub time_limit: TimeLimit,
    /// The AMQP `priority` property (0-9 as Celery sends it): orders the jobs the store holds.
    pub priority: u8,
    /// Celery's canvas in the body: what runs after this job (a chain's next steps, callbacks)
    /// or on its failure (errbacks).
    pub embed: Embed,
    /// The `group` and `group_index` headers: a member of a group, and its place in it.
    pub group: Option<String>,
    pub group_index: Option<i64>,
    /// The `parent_id` and `root_id` headers: the job whose end published this one, and the
    /// first of its workflow (`None`: this one).
    pub parent_id: Option<String>,
    pub root_id: Option<String>,
}

/// The body's third part, `{callbacks, errbacks, chain, chord}`: Celery signatures (JSON
/// objects) kept as they came, in serde's field order as Celery's keys sort.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Embed {
    pub callbacks: Option<Vec<Value>>,
    /// The steps after this one, last step first (Celery pops the next from the end).
    pub chain: Option<Vec<Value>>,
    pub chord: Option<Value>,
    pub errbacks: Option<Vec<Value>>,
}

impl Embed {
    /// Nothing in it: a plain job's.
    pub fn is_plain(&self) -> bool {
        let none = |v: &Option<Vec<Value>>| v.as_ref().is_none_or(Vec::is_empty);
        none(&self.callbacks) && none(&self.chain) && none(&self.errbacks) && self.chord.is_none()
    }
}

/// A message's `timelimit` header: `[hard, soft]` in seconds, each may be null. Celery's order
/// is hard first (`[time_limit, soft_time_limit]`, celery/app/amqp.py).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    pub hard: Option<Duration>,
    pub soft: Option<Duration>,
}

impl TimeLimit {
    /// The limit cm enforces: the hard one; the soft one where there is no hard one. cm has no
    /// soft limit of its own (a command cannot catch Celery's SoftTimeLimitExceeded), so a soft
    /// limit alone ends the job as a hard one would, and a soft limit under a hard one is not
    /// enforced.
    pub fn enforced(&self) -> Option<Duration> {
        self.hard.or(self.soft)
    }
}

/// Why a message cannot be a task; the reason goes with it to the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: cm reads JSON (set task_serializer='json' on Celery clients)")]
    ContentType(String),
    #[error("missing header {0:?}: not a Celery protocol v2 message")]
    MissingHeader(&'static str),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body has the wrong shape: {0}")]
    WrongShape(&'static str),
    #[error("header {header:?} is {got}: it must be a whole number from {min} to {max}")]
    OutOfRange {
        header: &'static str,
        got: String,
        min: i64,
        max: i64,
    },
    #[error("header {header:?}: {why}")]
    BadTime {
        header: &'static str,
        why: timestamp::BadTimestamp,
    },
    #[error(
        "header \"timelimit\" is {got}: it must be [hard, soft], each a number of seconds or null"
    )]
    BadTimeLimit { got: String },
}

impl TaskMessage {
    /// A new message for `task` with a fresh UUID, as Celery's task ids are. Version 7 (time
    /// first, then random) rather than Celery's random version 4: the store's indexes on the id
    /// then grow at one end instead of touching a random page per job.
    pub fn new(task: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            task: task.to_string(),
            args,
            kwargs,
            retries: 0,
            reply_to: None,
            correlation_id: None,
            eta_ms: None,
            expires_ms: None,
            time_limit: TimeLimit::default(),
            priority: 0,
            embed: Embed::default(),
            group: None,
            group_index: None,
            parent_id: None,
            root_id: None,
        }
    }
}

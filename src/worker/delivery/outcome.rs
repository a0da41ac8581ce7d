//! A job's record. Every store event of a job is built here, from RECEIVED to its end; and that
//! end is decided once, as an [`Outcome`], from which come its line in the log, its store
//! event, its Celery task event, the count and the rpc:// reply. What becomes of its message is
//! `settle`'s business.

use std::borrow::Cow;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tracing::{debug, warn};

use crate::celery::event_format::TaskEvent;
use crate::celery::message::TaskMessage;
use crate::celery::pyrepr::py_repr;
use crate::config::policy::RetryPolicy;
use crate::config::QueueConfig;
use crate::jobs::cancel::Cancel;
use crate::jobs::run::Verdict;
use crate::jobs::{self, Job};
use crate::store::{self, Event, SharedText, Spawned};
use crate::worker::context::{job_line, SessionContext, WorkerState};
use crate::worker::events::Events;

/// The job is received here: its row as the message describes it (a job a Celery client
/// published has no row until a worker receives it; a final row stays as it is), `at` then.
pub(super) fn received(w: &WorkerState, msg: &TaskMessage, job: &Job, at: i64) -> Event {
    Event::Received {
        job: jobs::record(msg, Some(job), &w.queue.name, None, at),
        worker: w.node.clone(),
        at,
    }
}

/// A state on its way (STARTED, a step of its kind): queued, never waited for; the final
/// state's commit covers it.
pub(super) fn progress(w: &WorkerState, id: &SharedText, state: Cow<'static, str>) -> Event {
    Event::State {
        id: id.clone(),
        state,
        worker: w.node.clone(),
        at: store::now_ms(),
    }
}

/// A redelivery of a job already final (`state`): noted in its history, not run again.
pub(super) fn redelivered(w: &WorkerState, id: &SharedText, state: String) -> Event {
    Event::Redelivered {
        id: id.clone(),
        state,
        worker: w.node.clone(),
        at: store::now_ms(),
    }
}

/// The job given back unfinished, `why`: PENDING again, its message back to the queue.
pub(super) fn given_back(w: &WorkerState, id: &str, why: &str) -> Event {
    Event::GivenBack {
        id: id.into(),
        worker: w.node.clone(),
        at: store::now_ms(),
        why: why.to_string(),
    }
}

/// A lease on the running job for this worker, from `at` until `until`.
pub(super) fn leased(w: &WorkerState, id: &SharedText, at: i64, until: i64) -> Event {
    Event::Leased {
        id: id.clone(),
        worker: w.node.clone(),
        at,
        until,
    }
}

/// A job's retry policy: its task's, over its queue's defaults.
#[derive(Clone, Copy)]
pub(super) struct Retry<'a> {
    pub(super) policy: &'a RetryPolicy,
    pub(super) queue: &'a QueueConfig,
}

impl Retry<'_> {
    /// How many retries it may have, for the log line.
    pub(super) fn most(&self) -> u32 {
        self.policy.retries(self.queue)
    }
}

pub(super) enum Outcome {
    /// Its result, as JSON text.
    Success(String),
    /// Failed with retries left: published again as attempt `attempt` (of `of` retries), after
    /// `wait`, held by the store.
    Retry {
        why: String,
        attempt: u32,
        of: u32,
        wait: Duration,
    },
    /// Failed for good.
    Failure(String),
    /// Revoked: ended by a terminate (`terminated`, with the signal if known), or never run
    /// (revoked before it ran, or `expired`).
    Revoked {
        why: String,
        terminated: bool,
        signal: Option<Signal>,
        /// Received (or due) after the message's `expires`.
        expired: bool,
    },
}

impl Outcome {
    /// What a run that was delivery number `retries + 1` of its message comes to, under the
    /// retry `policy` of its task (the queue's retries and backoff where it says nothing);
    /// `exit_code`: its command's, if it exited; `asked` is what the job was asked while it ran
    /// (`Stops::forget`'s answer).
    /// The caller settles an interrupted run (it goes back to the queue) before asking.
    pub(super) fn of(
        verdict: Verdict,
        asked: Option<Cancel>,
        retries: u32,
        retry: Retry<'_>,
        exit_code: Option<i32>,
    ) -> Self {
        let wait = || retry.policy.wait(retry.queue, retries, exit_code);
        match verdict {
            Verdict::Success(result) => Self::Success(result),
            Verdict::Failure(why) => match wait() {
                Some(wait) => Self::Retry {
                    why,
                    attempt: retries + 1,
                    of: retry.most(),
                    wait,
                },
                None => Self::Failure(why),
            },
            Verdict::Interrupted(why) => Self::Failure(why),
            Verdict::Revoked(why) => Self::Revoked {
                why,
                expired: false,
                terminated: true,
                signal: match asked {
                    Some(Cancel::Terminate(signal)) => Some(signal),
                    _ => None,
                },
            },
        }
    }

    /// What the store records: the final state (with the tail of a command's `output`, and
    /// what it starts or ends with it, `spawned`), or RETRY with the failure.
    pub(super) fn event(
        &self,
        id: &SharedText,
        worker: &SharedText,
        output: Option<String>,
        spawned: Vec<Spawned>,
    ) -> Event {
        let (id, worker, at) = (id.clone(), worker.clone(), store::now_ms());
        match self {
            Self::Success(result) => Event::Finished {
                spawned,
                id,
                state: store::SUCCESS,
                worker,
                at,
                result: Some(result.clone()),
                error: None,
                output,
            },
            Self::Retry { why, attempt, .. } => Event::Retry {
                id,
                worker,
                at,
                error: why.clone(),
                retries: i64::from(*attempt),
            },
            Self::Failure(why) => Event::Finished {
                spawned,
                id,
                state: store::FAILURE,
                worker,
                at,
                result: None,
                error: Some(why.clone()),
                output,
            },
            Self::Revoked { why, .. } => Event::Finished {
                spawned,
                id,
                state: store::REVOKED,
                worker,
                at,
                result: None,
                error: Some(why.clone()),
                output,
            },
        }
    }

    /// Its line in the worker's log.
    pub(super) fn log(&self, node: &str, id: &str, task: &str) {
        match self {
            Self::Success(_) => job_line(node, id, task, "SUCCESS"),
            Self::Retry {
                why,
                attempt,
                of,
                wait,
            } => job_line(
                node,
                id,
                task,
                &format!("RETRY {attempt} of {of} in {wait:?}: {why}"),
            ),
            Self::Failure(why) => job_line(node, id, task, &format!("FAILURE {why}")),
            Self::Revoked {
                terminated: false,
                expired: false,
                ..
            } => job_line(node, id, task, "REVOKED (revoked before it ran)"),
            Self::Revoked { why, .. } => job_line(node, id, task, &format!("REVOKED {why}")),
        }
    }

    /// Once its store event is durable (a monitor never shows an end the store has not): its
    /// task event, the count, and the rpc:// reply of a job done for good. `runtime`: how long
    /// it ran, in seconds.
    pub(super) async fn announce(&self, ctx: &SessionContext, msg: &TaskMessage, runtime: f64) {
        let w = &*ctx.worker;
        self.send_event(&w.remote.events, &msg.id, runtime);
        match self {
            Self::Success(_) => w.stats.done(),
            Self::Failure(_) | Self::Revoked { .. } => w.stats.failed(),
            Self::Retry { .. } => {}
        }
        if let Some(reply_to) = &msg.reply_to {
            if let Some((status, result)) = self.reply() {
                reply(ctx, msg, reply_to, status, result).await;
            }
        }
    }

    /// Its Celery task event (`task-succeeded`, `-retried`, `-failed`, `-revoked`), if task
    /// events are on.
    fn send_event(&self, events: &Events, uuid: &str, runtime: f64) {
        if !events.enabled() {
            return;
        }
        let exception = match self {
            Self::Success(result) => {
                return events.task(&TaskEvent::Succeeded {
                    uuid,
                    result,
                    runtime,
                })
            }
            Self::Revoked {
                terminated,
                signal,
                expired,
                ..
            } => {
                return events.task(&TaskEvent::Revoked {
                    uuid,
                    terminated: *terminated,
                    signum: signal.map(|s| s as i32),
                    expired: *expired,
                });
            }
            Self::Retry { why, .. } | Self::Failure(why) => format!("JobFailed({})", py_repr(why)),
        };
        // A cm job has no Python traceback; its reason is the whole story.
        let traceback = "";
        events.task(&match self {
            Self::Retry { .. } => TaskEvent::Retried {
                uuid,
                exception: &exception,
                traceback,
            },
            _ => TaskEvent::Failed {
                uuid,
                exception: &exception,
                traceback,
            },
        });
    }

    /// The rpc:// status and result of a job done for good; a retry has none yet.
    fn reply(&self) -> Option<(&'static str, Value)> {
        use crate::celery::rpc::status_and_result;
        match self {
            Self::Success(text) => Some(status_and_result(store::SUCCESS, Some(text), None)),
            Self::Failure(why) => Some(status_and_result(store::FAILURE, None, Some(why))),
            Self::Revoked { why, .. } => Some(status_and_result(store::REVOKED, None, Some(why))),
            Self::Retry { .. } => None,
        }
    }
}

/// The rpc:// result backend: a Celery client's `AsyncResult.get()` reads this from `reply_to`.
async fn reply(
    ctx: &SessionContext,
    msg: &TaskMessage,
    reply_to: &str,
    status: &str,
    result: Value,
) {
    let correlation = msg.correlation_id.as_deref().unwrap_or(&msg.id);
    let (body, props) = crate::celery::rpc::reply(&msg.id, correlation, status, result);
    let sent = ctx
        .publisher
        .publish_confirmed(reply_to, &body, props)
        .await;
    match sent {
        Ok(()) => {}
        // Expected: a `--wait` reads the end from the store and may be gone before its reply,
        // taking its reply address with it (RabbitMQ returns the reply NO_ROUTE).
        Err(crate::amqp::BrokerError::Returned { code, text, .. }) => debug!(
            "job {}: no one waits at {reply_to} any more ({code} {text}); the store has its end",
            msg.id
        ),
        Err(e) => warn!("sending the result of job {} to {reply_to}: {e}", msg.id),
    }
}

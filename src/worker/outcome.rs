//! How a job that ran ended, decided once. From that one value come its store event, its line
//! in the worker's log and its follow-up: the count, a retry's re-publish, the rpc:// reply, the
//! ack (or, when the retry cannot be published, giving the delivery back).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::BasicProperties;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tracing::{error, warn};

use super::delivery::{give_back, say, Ctx};
use super::events::Events;
use crate::celery::event_format::TaskEvent;
use crate::celery::message::TaskMessage;
use crate::celery::pyrepr::py_repr;
use crate::jobs::cancel::Cancel;
use crate::jobs::run::Verdict;
use crate::store::{self, Event};

pub(super) enum Outcome {
    /// Its result, as JSON text.
    Success(String),
    /// Failed with retries left: published again as attempt `attempt`, after `wait`.
    Retry {
        why: String,
        attempt: u32,
        wait: Duration,
    },
    /// Failed for good.
    Failure(String),
    /// Revoked: ended by a terminate (`terminated`, with the signal if known), or never run.
    Revoked {
        why: String,
        terminated: bool,
        signal: Option<Signal>,
        /// Received (or due) after the message's `expires`.
        expired: bool,
    },
}

impl Outcome {
    /// What a run that was delivery number `retries + 1` of its message comes to; `asked` is
    /// what the job was asked while it ran (`Stops::forget`'s answer).
    /// The caller settles an interrupted run (it goes back to the queue) before asking.
    pub(super) fn of(verdict: Verdict, asked: Option<Cancel>, retries: u32, ctx: &Ctx) -> Self {
        match verdict {
            Verdict::Success(result) => Self::Success(result),
            Verdict::Failure(why) if retries < ctx.retries => Self::Retry {
                why,
                attempt: retries + 1,
                wait: ctx
                    .retry_backoff
                    .saturating_mul(2u32.saturating_pow(retries)),
            },
            Verdict::Failure(why) | Verdict::Interrupted(why) => Self::Failure(why),
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

    /// What the store records: the final state (with the tail of a command's `output`), or
    /// RETRY with the failure.
    pub(super) fn event(
        &self,
        id: &store::SharedText,
        worker: &store::SharedText,
        output: Option<String>,
    ) -> Event {
        let (id, worker, at) = (id.clone(), worker.clone(), store::now_ms());
        match self {
            Self::Success(result) => Event::Finished {
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
                id,
                state: store::FAILURE,
                worker,
                at,
                result: None,
                error: Some(why.clone()),
                output,
            },
            Self::Revoked { why, .. } => Event::Finished {
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

    /// Its line in the worker's log; `of` is how many retries the queue allows.
    pub(super) fn log(&self, node: &str, id: &str, task: &str, of: u32) {
        match self {
            Self::Success(_) => say(node, id, task, "SUCCESS"),
            Self::Retry { why, attempt, wait } => say(
                node,
                id,
                task,
                &format!("RETRY {attempt} of {of} in {wait:?}: {why}"),
            ),
            Self::Failure(why) => say(node, id, task, &format!("FAILURE {why}")),
            Self::Revoked { why, .. } => say(node, id, task, &format!("REVOKED {why}")),
        }
    }

    /// Its Celery task event (`task-succeeded`, `-retried`, `-failed`, `-revoked`), if task
    /// events are on.
    pub(super) fn send_event(&self, events: &Events, uuid: &str, runtime: f64) {
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

    /// Once the event is durable: count it, publish a retry (after its wait), reply to an
    /// rpc:// client if the job is done for good, and ack `delivery` (`None`: a leased job's,
    /// acked when the lease was taken).
    pub(super) async fn follow_up(
        &self,
        ctx: &Ctx,
        msg: &TaskMessage,
        delivery: Option<&Delivery>,
    ) {
        match self {
            Self::Success(_) => ctx.stats.done(),
            Self::Failure(_) | Self::Revoked { .. } => ctx.stats.failed(),
            Self::Retry { wait, .. } => {
                tokio::time::sleep(*wait).await;
                let mut again = msg.clone();
                again.retries += 1;
                let (body, props) = again.encode(&ctx.node);
                if let Err(e) = ctx
                    .publisher
                    .publish_confirmed(&ctx.queue, &body, props)
                    .await
                {
                    let why = format!("re-publishing for retry: {e}");
                    return match delivery {
                        Some(delivery) => give_back(ctx, delivery, &msg.id, &why).await,
                        None => error!(
                            "job {}: {why}; it stays RETRY in the store: run it again with cm call",
                            msg.id
                        ),
                    };
                }
            }
        }
        if let Some(reply_to) = &msg.reply_to {
            if let Some((status, result)) = self.reply() {
                reply(ctx, msg, reply_to, status, result).await;
            }
        }
        if let Some(delivery) = delivery {
            ctx.acks.ack(delivery.delivery_tag);
        }
    }

    /// The rpc:// status and result of a job done for good; a retry has none yet.
    fn reply(&self) -> Option<(&'static str, Value)> {
        match self {
            // Our own JSON text: it always parses back.
            Self::Success(text) => Some((
                "SUCCESS",
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
            )),
            Self::Failure(why) => Some((
                "FAILURE",
                json!({"exc_type": "JobFailed", "exc_message": [why], "exc_module": "builtins"}),
            )),
            Self::Revoked { why, .. } => Some((
                "REVOKED",
                json!({"exc_type": "TaskRevokedError", "exc_message": [why], "exc_module": "celery.exceptions"}),
            )),
            Self::Retry { .. } => None,
        }
    }
}

/// The rpc:// result backend: a Celery client's `AsyncResult.get()` reads this from `reply_to`.
async fn reply(ctx: &Ctx, msg: &TaskMessage, reply_to: &str, status: &str, result: Value) {
    let body = json!({
        "task_id": msg.id, "status": status, "result": result,
        "traceback": null, "children": [],
        "date_done": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    let correlation = msg.correlation_id.clone().unwrap_or_else(|| msg.id.clone());
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_correlation_id(correlation.as_str().into());
    let sent = ctx
        .publisher
        .publish_confirmed(reply_to, body.to_string().as_bytes(), props)
        .await;
    if let Err(e) = sent {
        warn!("sending the result of job {} to {reply_to}: {e}", msg.id);
    }
}

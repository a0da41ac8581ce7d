//! Celery's flow-control methods over the pidbox, answered through the store's rows as
//! `cm queue pause|resume|scale` are, for this worker alone (its node's row): so they outlast a
//! restart, which Celery's do not. `rate_limit` sets the task's rate for every worker on every
//! host (`store::rates`), where Celery's is each worker's own and forgotten on restart. Replies
//! in Celery's words (`celery/worker/control.py`).

use serde_json::Value;
use tracing::{info, warn};

use super::Flow;
use crate::celery::control::Request;
use crate::celery::replies::{self, Method};
use crate::config::flow::parse_celery_rate;
use crate::config::limits::CONCURRENCY;
use crate::jobs::cancel::Stops;
use crate::store::controls::Control;

use super::super::running::Running;

/// Answers `method` (one of the flow-control ones) for this worker.
pub(in crate::worker) async fn answer(
    flow: &Flow,
    method: Method,
    request: &Request,
    running: &Running,
    stops: &Stops,
) -> Value {
    let now = flow.now();
    let (control, reply) = match method {
        Method::AddConsumer | Method::CancelConsumer => {
            let Some(queue) = request.text_argument("queue") else {
                return replies::error("name the queue: queue=NAME");
            };
            if queue != flow.queue() {
                return replies::error(&format!(
                    "a cm worker consumes only its configured queue {}, not {queue}; add a worker for {queue} in fabfile.toml",
                    flow.queue()
                ));
            }
            if method == Method::AddConsumer {
                let reply = if now.paused {
                    format!("add consumer {queue}")
                } else {
                    format!("already consuming from {queue}")
                };
                (Control::Resume, reply)
            } else {
                (
                    Control::Pause { terminate: false },
                    format!("no longer consuming from {queue}"),
                )
            }
        }
        Method::PoolGrow | Method::PoolShrink => {
            let n = request.count_argument("n").unwrap_or(1).max(0);
            let to = if method == Method::PoolGrow {
                i64::from(now.concurrency) + n
            } else {
                i64::from(now.concurrency) - n
            };
            let Some(to) = slots(to) else {
                return replies::error(&format!(
                    "the pool would have {to} slot(s); cm keeps {}..={}",
                    CONCURRENCY.start(),
                    CONCURRENCY.end()
                ));
            };
            let reply = if method == Method::PoolGrow {
                "pool will grow"
            } else {
                "pool will shrink"
            };
            (Control::Scale(to), reply.to_string())
        }
        Method::Autoscale => {
            // cm keeps no autoscaler: its slots cost nothing idle, so it runs at the maximum.
            let max = request.count_argument("max");
            let min = request.count_argument("min");
            let Some(to) = max.and_then(slots) else {
                return replies::error(&format!(
                    "autoscale needs max between {} and {}",
                    CONCURRENCY.start(),
                    CONCURRENCY.end()
                ));
            };
            let min = min.map_or_else(|| "None".to_string(), |m| m.to_string());
            (
                Control::Scale(to),
                format!("autoscale now max={to} min={min}"),
            )
        }
        _ => return replies::unknown_method(&request.method),
    };
    let by = format!("{} (celery control {})", flow.node(), request.method);
    match flow.order(control, &by, running, stops).await {
        Ok(()) => {
            info!(
                "{}: {control:?} over remote control, kept in the store",
                request.method
            );
            replies::ok(&reply)
        }
        Err(e) => {
            warn!(
                "{} over remote control: {e}; nothing changed",
                request.method
            );
            replies::error(&format!("keeping it in the status store: {e}"))
        }
    }
}

/// `n` as a slot count cm takes.
fn slots(n: i64) -> Option<u16> {
    CONCURRENCY
        .contains(&n)
        .then(|| u16::try_from(n).ok())
        .flatten()
}

/// `rate_limit` (`celery control rate_limit TASK 10/m`): the task's rate for every worker on
/// every host, kept in the store; "0" or None lifts it, whatever the config says, as Celery's
/// does. `tasks`: what this worker runs (Celery answers `unknown task` for the rest).
pub(in crate::worker) async fn rate_limit(
    flow: &Flow,
    tasks: &[String],
    request: &Request,
) -> Value {
    let Some(task) = request.text_argument("task_name") else {
        return replies::error("name the task: task_name=NAME");
    };
    if crate::config::BUILT_IN.contains(&task) {
        return replies::error(&format!(
            "{task}'s rate limit is set per recipe or for provisioning in fabfile.toml"
        ));
    }
    if !tasks.iter().any(|t| t == task) {
        warn!("rate limit attempt for unknown task {task}");
        return replies::error("unknown task");
    }
    let given = request.text_argument("rate_limit").unwrap_or("");
    let rate = match parse_celery_rate(given) {
        Ok(rate) => rate,
        Err(e) => return replies::error(&format!("Invalid rate limit string: {e}")),
    };
    let by = format!("{} (celery control rate_limit)", flow.node());
    let (interval_ms, text) = rate.as_ref().map_or((0.0, "off".to_string()), |r| {
        (r.interval_ms(), r.text.clone())
    });
    if let Err(e) = flow
        .store
        .set_rate_override(task, interval_ms, &text, &by)
        .await
    {
        warn!("rate_limit over remote control: {e}; nothing changed");
        return replies::error(&format!("keeping it in the status store: {e}"));
    }
    // Known here at once; the other workers read it within their next poll.
    if let Ok(rows) = flow.store.rate_overrides().await {
        flow.rates.set(rows);
    }
    if rate.is_none() {
        info!("rate limits disabled for tasks of type {task}, on every worker (kept in the store)");
        replies::ok("rate limit disabled successfully")
    } else {
        info!(
            "new rate limit for tasks of type {task}: {text}, on every worker (kept in the store)"
        );
        replies::ok("new rate limit set successfully")
    }
}

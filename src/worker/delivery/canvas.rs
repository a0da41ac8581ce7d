//! Celery's canvas on a cm worker (issue 29): what a job's end starts, or ends with it, read
//! from its message's embed as a Celery worker reads it (celery/app/trace.py,
//! celery/backends/base.py):
//!
//! - SUCCESS: each callback (`link`) with the result as its first argument, then the chain's
//!   next step (the embed's `chain` is reversed: the next step is its last) with the result
//!   first and the rest of the chain after it; an `immutable` signature takes no result.
//! - FAILURE: every remaining chain element ends FAILURE with the same error (its rpc:// reply
//!   goes to its `reply_to`, so a client's `.get()` on the chain raises instead of hanging),
//!   and each errback (`link_error`) runs with the failed job's id as its one argument.
//!
//! These are [`Spawned`] jobs: the store writes them in the transaction of the end, only if
//! that end is the one stored, and the outbox publishes them (or sends their replies). A step
//! goes to its signature's `options.queue`, else to the first queue that lists its task; a
//! task no queue takes, or arguments its task does not take, end that step FAILURE at once,
//! with the rest of its chain.

use serde_json::{Map, Value};
use tracing::warn;

use crate::celery::message::{Embed, TaskMessage};
use crate::config::Config;
use crate::jobs;
use crate::store::{self, Spawned, FAILURE, PENDING};

/// How a job ended, as its canvas sees it.
pub(super) enum End<'a> {
    /// Its result, as JSON text.
    Success(&'a str),
    /// Its error.
    Failure(&'a str),
}

/// What the end of `msg` starts or ends with it; empty for a message without a canvas.
pub(super) fn spawned(cfg: &Config, msg: &TaskMessage, end: End<'_>) -> Vec<Spawned> {
    if msg.embed.is_plain() {
        return Vec::new();
    }
    let now = store::now_ms();
    let mut out = Vec::new();
    let chain = msg.embed.chain.as_deref().unwrap_or_default();
    match end {
        End::Success(result) => {
            // Our own JSON text: it always parses back.
            let result =
                serde_json::from_str(result).unwrap_or_else(|_| Value::String(result.into()));
            for link in msg.embed.callbacks.iter().flatten() {
                let why = format!("linked to {}, which ended SUCCESS", msg.id);
                step(cfg, msg, link, Some(&result), &[], now, why, &mut out);
            }
            if let Some((next, rest)) = chain.split_last() {
                let why = format!("the next step of a chain after {}", msg.id);
                step(cfg, msg, next, Some(&result), rest, now, why, &mut out);
            }
        }
        End::Failure(error) => failed(cfg, msg, error, now, &mut out),
    }
    out
}

/// The failure of `msg` with `error`: its remaining chain elements end FAILURE, its errbacks
/// run with its id.
fn failed(cfg: &Config, msg: &TaskMessage, error: &str, now: i64, out: &mut Vec<Spawned>) {
    for element in msg.embed.chain.iter().flatten() {
        let Some(sig) = signature(element, &msg.id) else {
            continue;
        };
        if task_id(&sig).is_none() {
            // Celery skips a chain element with no task id of its own: no client waits on it.
            continue;
        }
        let next = message_of(&sig, msg, None, &[]);
        let queue = route(cfg, &sig).unwrap_or_default();
        out.push(Spawned {
            job: jobs::new_job(&next, cfg, &queue, None, now),
            state: FAILURE,
            error: Some(error.to_string()),
            why: format!("an earlier step of its chain, {}, failed", msg.id),
        });
    }
    let failed_id = Value::String(msg.id.clone());
    for errback in msg.embed.errbacks.iter().flatten() {
        let why = format!("errback of {}, which ended FAILURE", msg.id);
        step(cfg, msg, errback, Some(&failed_id), &[], now, why, out);
    }
}

/// One signature applied after `parent` with `first` as its first argument (unless
/// immutable) and `rest` as its chain: PENDING on its queue, or FAILURE at once (with what that
/// ends) where no queue takes its task.
#[allow(clippy::too_many_arguments)]
fn step(
    cfg: &Config,
    parent: &TaskMessage,
    sig: &Value,
    first: Option<&Value>,
    rest: &[Value],
    now: i64,
    why: String,
    out: &mut Vec<Spawned>,
) {
    let Some(sig) = signature(sig, &parent.id) else {
        return;
    };
    let next = message_of(&sig, parent, first, rest);
    if let Some(kind) = sig.subtask_type.as_deref() {
        let error = format!(
            "a nested Celery {kind} inside a chain or a link does not run on cm workers: use a flat chain, or cm's --after"
        );
        return refuse(cfg, &next, error, now, out);
    }
    match route(cfg, &sig) {
        // A task of cm's is checked as its worker will check it (`cm call` does the same
        // before it publishes): a step that would be a dead letter ends here, where its client
        // can be told. Another's task (a Python worker's queue, named) goes as it is.
        Some(queue) => match known(cfg, &sig.task)
            .then(|| jobs::screen(&next, cfg))
            .transpose()
        {
            Ok(_) => out.push(Spawned {
                job: jobs::new_job(&next, cfg, &queue, None, now),
                state: PENDING,
                error: None,
                why,
            }),
            Err(error) => refuse(cfg, &next, error, now, out),
        },
        None => {
            let error = format!(
                "no queue takes task {:?}: list it in a queue's tasks in the fabfile, or give the signature a queue",
                sig.task
            );
            refuse(cfg, &next, error, now, out)
        }
    }
}

/// A step that can never run here: FAILURE at once, with what its failure ends.
fn refuse(cfg: &Config, next: &TaskMessage, error: String, now: i64, out: &mut Vec<Spawned>) {
    warn!("job {}: {error}", next.id);
    out.push(Spawned {
        job: jobs::new_job(next, cfg, "", None, now),
        state: FAILURE,
        error: Some(error.clone()),
        why: "it cannot run on cm workers".into(),
    });
    failed(cfg, next, &error, now, out);
}

/// A Celery signature, as an embed carries it.
#[derive(serde::Deserialize)]
struct Signature {
    task: String,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    kwargs: Option<Map<String, Value>>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(default)]
    immutable: bool,
    /// `chain`, `group`, `chord`: a canvas, not one task.
    #[serde(default)]
    subtask_type: Option<String>,
}

fn signature(sig: &Value, parent: &str) -> Option<Signature> {
    match serde_json::from_value(sig.clone()) {
        Ok(sig) => Some(sig),
        Err(e) => {
            warn!("job {parent}: a signature in its canvas is not Celery's ({e}); it is left out");
            None
        }
    }
}

/// The id a client gave the signature (it froze it, and may wait on that id).
fn task_id(sig: &Signature) -> Option<String> {
    let id = sig.options.as_ref()?.get("task_id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// The message of `sig` run after `parent`, with `first` as its first argument (unless
/// immutable) and `rest` as its chain. A signature that was not frozen (a link, often) has no
/// id yet: it gets a new one, as a Celery worker gives it.
fn message_of(
    sig: &Signature,
    parent: &TaskMessage,
    first: Option<&Value>,
    rest: &[Value],
) -> TaskMessage {
    let options = sig.options.clone().unwrap_or_default();
    let text = |key: &str| options.get(key).and_then(Value::as_str).map(str::to_string);
    let mut args: Vec<Value> = Vec::new();
    if let (Some(first), false) = (first, sig.immutable) {
        args.push(first.clone());
    }
    args.extend(sig.args.iter().flatten().cloned());
    let mut msg = TaskMessage::new(&sig.task, args, sig.kwargs.clone().unwrap_or_default());
    if let Some(id) = task_id(sig) {
        msg.id = id;
    }
    msg.reply_to = text("reply_to").or_else(|| parent.reply_to.clone());
    msg.parent_id = Some(parent.id.clone());
    msg.root_id = Some(parent.root_id.clone().unwrap_or_else(|| parent.id.clone()));
    msg.group = text("group_id");
    msg.group_index = options.get("group_index").and_then(Value::as_i64);
    let seconds = |key: &str| {
        options
            .get(key)
            .and_then(Value::as_f64)
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            .filter(|d| !d.is_zero())
    };
    msg.time_limit.hard = seconds("time_limit");
    msg.time_limit.soft = seconds("soft_time_limit");
    let list = |key: &str| options.get(key).and_then(Value::as_array).cloned();
    msg.embed = Embed {
        callbacks: list("link"),
        chain: (!rest.is_empty()).then(|| rest.to_vec()),
        chord: None,
        errbacks: list("link_error"),
    };
    msg
}

/// Whether a queue of this config takes `task`.
fn known(cfg: &Config, task: &str) -> bool {
    cfg.queue_for_task(task).is_some()
}

/// The queue of a step: its signature's `queue` option, else the first queue that lists its
/// task (a Python worker's router picks it there; cm's task table does here).
fn route(cfg: &Config, sig: &Signature) -> Option<String> {
    let named = sig
        .options
        .as_ref()
        .and_then(|o| o.get("queue"))
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty());
    match named {
        Some(queue) => Some(queue.to_string()),
        None => cfg.queue_for_task(&sig.task).map(|q| q.name.clone()),
    }
}

#[cfg(test)]
mod tests;

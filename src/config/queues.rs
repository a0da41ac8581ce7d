//! `[queues.NAME]`: each queue's workers (a hostlist or a list), tasks, concurrency, prefetch,
//! retries and type.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::hostlist::{self, HostlistError};
use super::limits::{self, in_range, Limits};
use super::names;
use super::raw::{RawQueue, WorkerList};
use super::{ConfigError, QueueConfig};

pub(super) fn resolve(
    raw: &IndexMap<String, Spanned<RawQueue>>,
    limits: &Limits,
    node_host: &str,
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
) -> Result<Vec<QueueConfig>, ConfigError> {
    let mut queues: Vec<QueueConfig> = Vec::new();
    // Each worker name, and the queue that has it: names are unique across queues.
    let mut taken: HashMap<String, String> = HashMap::new();
    for (name, spanned) in raw {
        let q = spanned.get_ref();
        if let Some(why) = names::queue_problem(name) {
            return Err(at(
                Some(spanned.span()),
                format!("queues: {name:?} is not a valid queue name: {why}"),
            ));
        }
        let workers_span = q.workers.span();
        let room = limits.max_workers.saturating_sub(taken.len());
        let too_many = |n: u128| {
            at(
                Some(workers_span.clone()),
                format!(
                    "queues.{name}.workers: {n} workers, more than the {} of [limits] max_workers for the whole file",
                    limits.max_workers
                ),
            )
        };
        let workers = match q.workers.get_ref() {
            WorkerList::List(list) if list.len() > room => {
                return Err(too_many((taken.len() + list.len()) as u128))
            }
            WorkerList::List(list) => list.clone(),
            WorkerList::Pattern(p) => match hostlist::expand(p, room) {
                Ok(list) => list,
                Err(HostlistError::TooMany { hosts, .. }) => {
                    return Err(too_many(hosts.saturating_add(taken.len() as u128)))
                }
                Err(e) => {
                    return Err(at(
                        Some(workers_span.clone()),
                        format!(
                            "queues.{name}.workers: bad hostlist {}: it {e}",
                            hostlist::quoted(p)
                        ),
                    ))
                }
            },
        };
        if workers.is_empty() {
            return Err(at(
                Some(workers_span),
                format!("queues.{name}.workers: no worker names"),
            ));
        }
        for w in &workers {
            if let Some(why) = names::worker_problem(w, node_host) {
                return Err(at(
                    Some(workers_span.clone()),
                    format!("queues.{name}.workers: {w:?} is not a valid worker name: {why}"),
                ));
            }
            if let Some(other) = taken.insert(w.clone(), name.clone()) {
                let message = if &other == name {
                    format!("queues.{name}.workers: worker {w:?} is listed twice")
                } else {
                    format!(
                        "queues.{name}.workers: worker {w:?} is also in queues.{other}; each worker consumes one queue"
                    )
                };
                return Err(at(Some(workers_span.clone()), message));
            }
        }
        let quorum = match &q.queue_type {
            None => false,
            Some(t) if t.get_ref() == "classic" => false,
            Some(t) if t.get_ref() == "quorum" => true,
            Some(t) => {
                return Err(at(
                    Some(t.span()),
                    format!("queues.{name}.queue_type must be \"classic\" or \"quorum\""),
                ))
            }
        };
        let number = |k: &str, value: Option<&Spanned<i64>>, range| {
            in_range(&at, &format!("queues.{name}.{k}"), value, range)
        };
        let concurrency = number("concurrency", q.concurrency.as_ref(), limits::CONCURRENCY)?
            .map_or(1, |n| n as u16);
        // Celery's default prefetch multiplier: the next jobs are at hand while one is acked.
        let prefetch = number("prefetch", q.prefetch.as_ref(), limits::PREFETCH)?
            .map_or(concurrency.saturating_mul(4), |n| n as u16)
            .max(concurrency);
        let retries =
            number("retries", q.retries.as_ref(), limits::RETRIES)?.map_or(0, |n| n as u32);
        // RabbitMQ 4 drops a quorum queue's message returned more than 20 times: cm's own
        // limit, at most that by default, dead-letters it with its reason before.
        let delivery_limit = number(
            "delivery_limit",
            q.delivery_limit.as_ref(),
            limits::DELIVERY_LIMIT,
        )?
        .map_or(20, |n| n as u32);
        // A moment: longer than a millisecond job's turn, far shorter than a job worth waiting
        // behind.
        let hand_back_after = number(
            "hand_back_after_ms",
            q.hand_back_after_ms.as_ref(),
            limits::HAND_BACK_MS,
        )?
        .map_or(50, |n| n as u64);
        let retry_backoff = in_range(
            &at,
            &format!("queues.{name}.retry_backoff_seconds"),
            q.retry_backoff_seconds.as_ref(),
            limits::SECONDS,
        )?
        .unwrap_or(1.0);
        queues.push(QueueConfig {
            name: name.clone(),
            workers,
            tasks: q
                .tasks
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
            concurrency,
            prefetch,
            quorum,
            retries,
            retry_backoff: Duration::from_secs_f64(retry_backoff),
            delivery_limit,
            hand_back_after: Duration::from_millis(hand_back_after),
        });
    }
    Ok(queues)
}

/// Every task a queue lists is cm's own or a `[tasks."NAME"]`: a typo is caught here, not by a
/// publisher whose jobs no worker could run.
pub(super) fn check_tasks(
    raw: &IndexMap<String, Spanned<RawQueue>>,
    tasks: &IndexMap<String, Spanned<super::raw::RawCommand>>,
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (name, queue) in raw {
        let Some(listed) = &queue.get_ref().tasks else {
            continue;
        };
        if let Some(unknown) = listed
            .get_ref()
            .iter()
            .find(|t| !super::BUILT_IN.contains(&t.as_str()) && !tasks.contains_key(*t))
        {
            return Err(at(
                Some(listed.span()),
                format!(
                    "queues.{name}.tasks: {unknown:?} is no task: define [tasks.{unknown:?}] (cm.launch and cm.provision are cm's own)"
                ),
            ));
        }
    }
    Ok(())
}

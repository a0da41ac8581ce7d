//! A task's policy beside its command: unique jobs (`unique`, `unique_while`) and the retry
//! policy (`retries`, `retry_backoff`, `retry_max_delay`, `retry_jitter`, `retry_on_exit`), in
//! a `[tasks."NAME"]`, a `[recipes.NAME]` or `[provision]` that has a command. The queue's
//! `retries` and `retry_backoff_seconds` are the defaults of the retry policy.

use std::ops::Range;
use std::time::Duration;

use rand::Rng;
use toml::Spanned;

use super::limits::{self, in_range};
use super::raw::RawCommand;
use super::{ConfigError, QueueConfig};
use crate::jobs::args::Bound;
use crate::jobs::argv::Element;
use crate::store::{UNIQUE_QUEUED, UNIQUE_UNFINISHED};

/// What a task's jobs obey beyond how they run.
#[derive(Debug, Clone, Default)]
pub struct TaskPolicy {
    pub unique: Option<Unique>,
    pub retry: RetryPolicy,
}

/// `unique = "{host}:{level}"`: at most one job per key is queued (or unfinished) at a time.
#[derive(Debug, Clone)]
pub struct Unique {
    template: Element,
    /// [`UNIQUE_QUEUED`] or [`UNIQUE_UNFINISHED`].
    pub hold: &'static str,
}

impl Unique {
    /// The key of a job of task `task` whose arguments bound to `values`: the task's name and
    /// the template filled (keys of two tasks never collide).
    pub fn key(&self, task: &str, values: &Bound) -> String {
        format!("{task}:{}", self.template.fill(values))
    }
}

/// The retry policy's keys, each `None` where the queue's default holds.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    pub retries: Option<u32>,
    pub backoff: Option<Duration>,
    pub max_delay: Option<Duration>,
    pub jitter: bool,
    /// Only these exit codes retry; any other failure is final at once.
    pub on_exit: Option<Vec<i32>>,
}

impl RetryPolicy {
    /// No policy of its own: the queue's retries and backoff.
    pub const QUEUE_DEFAULTS: Self = Self {
        retries: None,
        backoff: None,
        max_delay: None,
        jitter: false,
        on_exit: None,
    };

    /// How many retries a job of `queue` under this policy may have.
    pub fn retries(&self, queue: &QueueConfig) -> u32 {
        self.retries.unwrap_or(queue.retries)
    }

    /// The wait before the retry after a job's run number `retries + 1` failed (with
    /// `exit_code`, if its command exited), or `None`: the failure is final.
    pub fn wait(
        &self,
        queue: &QueueConfig,
        retries: u32,
        exit_code: Option<i32>,
    ) -> Option<Duration> {
        if retries >= self.retries(queue) {
            return None;
        }
        if let Some(codes) = &self.on_exit {
            if !exit_code.is_some_and(|c| codes.contains(&c)) {
                return None;
            }
        }
        let base = self.backoff.unwrap_or(queue.retry_backoff);
        let mut wait = base.saturating_mul(2u32.saturating_pow(retries));
        if let Some(cap) = self.max_delay {
            wait = wait.min(cap);
        }
        if self.jitter && !wait.is_zero() {
            // Between half and all of it: the waits of many jobs spread, and still grow.
            wait = wait.mul_f64(rand::rng().random_range(0.5..=1.0));
        }
        Some(wait)
    }
}

type At<'a> = &'a dyn Fn(Option<Range<usize>>, String) -> ConfigError;

/// The policy at `key` (`tasks."ops.backup"`); `params`: the names a unique key may use.
pub(super) fn resolve(
    raw: &RawCommand,
    key: &str,
    params: &[String],
    at: At<'_>,
) -> Result<TaskPolicy, ConfigError> {
    let unique = match (&raw.unique, &raw.unique_while) {
        (None, None) => None,
        (None, Some(w)) => {
            return Err(at(
                Some(w.span()),
                format!("{key}.unique_while: no unique key to hold; add unique = \"{{host}}\" (a template over the params)"),
            ))
        }
        (Some(u), hold) => {
            let template = Element::parse(u.get_ref())
                .map_err(|e| at(Some(u.span()), format!("{key}.unique: {e}")))?;
            if let Some(missing) = template.placeholders().find(|n| !params.iter().any(|p| p == n)) {
                return Err(at(
                    Some(u.span()),
                    format!(
                        "{key}.unique: {{{missing}}} is not one of its params [{}]",
                        params.join(", ")
                    ),
                ));
            }
            let hold = match hold.as_ref().map(|h| (h, h.get_ref().as_str())) {
                None => UNIQUE_UNFINISHED,
                Some((_, "queued")) => UNIQUE_QUEUED,
                Some((_, "unfinished")) => UNIQUE_UNFINISHED,
                Some((h, other)) => {
                    return Err(at(
                        Some(h.span()),
                        format!("{key}.unique_while must be \"queued\" (until the job starts) or \"unfinished\" (until it ends), not {other:?}"),
                    ))
                }
            };
            Some(Unique { template, hold })
        }
    };
    let seconds = |k: &str, v: Option<&Spanned<f64>>| {
        in_range(&at, &format!("{key}.{k}"), v, limits::SECONDS)
            .map(|s| s.map(Duration::from_secs_f64))
    };
    let retries = in_range(
        &at,
        &format!("{key}.retries"),
        raw.retries.as_ref(),
        limits::RETRIES,
    )?
    .map(|n| n as u32);
    let on_exit = match &raw.retry_on_exit {
        None => None,
        Some(codes) => {
            if let Some(bad) = codes.get_ref().iter().find(|c| !(1..=255).contains(*c)) {
                return Err(at(
                    Some(codes.span()),
                    format!("{key}.retry_on_exit: {bad} is not an exit code that fails (1 to 255)"),
                ));
            }
            Some(codes.get_ref().iter().map(|&c| c as i32).collect())
        }
    };
    Ok(TaskPolicy {
        unique,
        retry: RetryPolicy {
            retries,
            backoff: seconds("retry_backoff", raw.retry_backoff.as_ref())?,
            max_delay: seconds("retry_max_delay", raw.retry_max_delay.as_ref())?,
            jitter: raw.retry_jitter.unwrap_or(false),
            on_exit,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;
    use crate::config::QueueConfig;

    /// A queue with `retries` and a backoff of 1 s, as a file gives it (other helpers' keys
    /// keep their defaults).
    fn queue(retries: u32) -> QueueConfig {
        let text = format!(
            "[broker]\nurl = \"amqp://localhost\"\n[queues.q]\nworkers = [\"w1\"]\nretries = {retries}\nretry_backoff_seconds = 1\n"
        );
        let cfg = crate::config::Config::parse(std::path::Path::new("/etc/cm/fabfile.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.queues[0].clone()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_the_queue_gives_the_defaults() {
        let policy = RetryPolicy {
            retries: Some(5),
            backoff: Some(Duration::from_secs(2)),
            max_delay: Some(Duration::from_secs(5)),
            ..RetryPolicy::default()
        };
        let waits: Vec<_> = (0..6).map(|n| policy.wait(&queue(0), n, None)).collect();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(waits, [s(2), s(4), s(5), s(5), s(5), None]);
        // Nothing set: the queue's retries and backoff, as before.
        let default = RetryPolicy::default();
        assert_eq!(default.wait(&queue(2), 1, Some(1)), s(2));
        assert_eq!(default.wait(&queue(2), 2, Some(1)), None);
    }

    #[test]
    fn only_the_listed_exit_codes_retry() {
        let policy = RetryPolicy {
            retries: Some(3),
            on_exit: Some(vec![75, 111]),
            ..RetryPolicy::default()
        };
        assert!(policy.wait(&queue(0), 0, Some(75)).is_some());
        assert!(policy.wait(&queue(0), 0, Some(111)).is_some());
        assert!(policy.wait(&queue(0), 0, Some(1)).is_none());
        // A time limit or a command that never started has no exit code: final.
        assert!(policy.wait(&queue(0), 0, None).is_none());
    }

    #[test]
    fn jitter_keeps_at_least_half_of_the_wait() {
        let policy = RetryPolicy {
            retries: Some(1),
            backoff: Some(Duration::from_secs(8)),
            jitter: true,
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let wait = policy.wait(&queue(0), 0, None).unwrap_or_default();
            assert!((Duration::from_secs(4)..=Duration::from_secs(8)).contains(&wait));
        }
    }
}

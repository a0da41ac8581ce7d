//! The allowed range of every number in the file (docs/configuration.md lists the same), and the
//! check that names a number's key, place and range when it is outside.

use std::ops::{Range, RangeInclusive};

use toml::Spanned;

use super::ConfigError;

/// Any duration in seconds: a day at most.
pub const SECONDS: RangeInclusive<f64> = 0.0..=86_400.0;
pub const RATE: RangeInclusive<f64> = 0.0..=1.0;
pub const CONCURRENCY: RangeInclusive<i64> = 1..=10_000;
pub const PREFETCH: RangeInclusive<i64> = 1..=65_535;
pub const RETRIES: RangeInclusive<i64> = 0..=10_000;
/// `[queues.NAME] hand_back_after_ms`: up to a minute; 0 never hands back.
pub const HAND_BACK_MS: RangeInclusive<i64> = 0..=60_000;
/// Deliveries of one message a quorum queue makes before cm dead-letters it.
pub const DELIVERY_LIMIT: RangeInclusive<i64> = 1..=10_000;
/// An hour at most.
pub const BUSY_MS: RangeInclusive<i64> = 0..=3_600_000;
pub const MAX_HOSTS: RangeInclusive<i64> = 1..=1_000_000;
pub const MAX_JOBS_PER_PUBLISH: RangeInclusive<i64> = 1..=10_000_000;
pub const MAX_WORKERS: RangeInclusive<i64> = 1..=100_000;
/// A command's time limit: a week at most (no limit: leave it out).
pub const TIME_LIMIT: RangeInclusive<f64> = 0.001..=604_800.0;
/// A message body: 1 KiB to RabbitMQ's own default limit, 128 MiB.
pub const MESSAGE_BYTES: RangeInclusive<i64> = 1024..=134_217_728;
/// How long a job runs before the store holds it instead of the broker: at least a second.
pub const LEASE_AFTER: RangeInclusive<f64> = 1.0..=86_400.0;
/// A lease's life between renewals: long enough for three renewals to be tried.
pub const LEASE: RangeInclusive<f64> = 3.0..=3_600.0;
/// The parents one job may wait for (`[workflows] max_parents`).
pub const MAX_PARENTS: RangeInclusive<i64> = 1..=1_000_000;
/// `[workflows] max_parents`'s default.
pub const DEFAULT_MAX_PARENTS: usize = 10_000;
/// Jobs with the same concurrency key that may run at once.
pub const KEY_LIMIT: RangeInclusive<i64> = 1..=10_000;
/// Between TERM and KILL: an hour at most.
pub const KILL_GRACE: RangeInclusive<f64> = 0.0..=3_600.0;

/// `[limits]`: how much one input may ask for, each checked before anything is expanded or
/// built, so that a typo is refused at once instead of filling the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most hosts one hostlist may name: `--hosts`, a `cm.launch` message's `hosts`, and the
    /// web's and `/api/`'s launches (unless `[web] max_hosts` sets the web's own).
    pub max_hosts: usize,
    /// The most jobs one `cm launch`, `cm provision` or `cm call` publishes (hosts x `--count`).
    pub max_jobs_per_publish: usize,
    /// The most workers the file's `[queues.NAME] workers` may name, all queues together.
    pub max_workers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_hosts: 1000,
            max_jobs_per_publish: 100_000,
            max_workers: 1000,
        }
    }
}

/// `[limits]` as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_hosts: Option<Spanned<i64>>,
    pub(super) max_jobs_per_publish: Option<Spanned<i64>>,
    pub(super) max_workers: Option<Spanned<i64>>,
}

/// `[limits]` as written, each key in its range.
pub(super) fn resolve(
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
    raw: &RawLimits,
) -> Result<Limits, ConfigError> {
    let default = Limits::default();
    let count = |key: &str, value: Option<&Spanned<i64>>, range, default: usize| {
        in_range(at, &format!("limits.{key}"), value, range)
            .map(|n| n.map_or(default, |n| usize::try_from(n).unwrap_or(default)))
    };
    Ok(Limits {
        max_hosts: count(
            "max_hosts",
            raw.max_hosts.as_ref(),
            MAX_HOSTS,
            default.max_hosts,
        )?,
        max_jobs_per_publish: count(
            "max_jobs_per_publish",
            raw.max_jobs_per_publish.as_ref(),
            MAX_JOBS_PER_PUBLISH,
            default.max_jobs_per_publish,
        )?,
        max_workers: count(
            "max_workers",
            raw.max_workers.as_ref(),
            MAX_WORKERS,
            default.max_workers,
        )?,
    })
}

/// The value of an optional number, if it lies in `range`; else an error at its place naming
/// `key` and the range (NaN and infinities are in no range).
pub(super) fn in_range<T>(
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
    key: &str,
    value: Option<&Spanned<T>>,
    range: RangeInclusive<T>,
) -> Result<Option<T>, ConfigError>
where
    T: PartialOrd + Copy + std::fmt::Display + std::fmt::Debug,
{
    match value {
        None => Ok(None),
        Some(v) if range.contains(v.get_ref()) => Ok(Some(*v.get_ref())),
        Some(v) => Err(at(
            Some(v.span()),
            format!(
                // Debug: a float as written (1e99, not a hundred digits).
                "{key} must be from {} to {} (got {:?})",
                range.start(),
                range.end(),
                v.get_ref()
            ),
        )),
    }
}

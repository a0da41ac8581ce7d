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
/// Deliveries of one message a quorum queue makes before cm dead-letters it.
pub const DELIVERY_LIMIT: RangeInclusive<i64> = 1..=10_000;
/// An hour at most.
pub const BUSY_MS: RangeInclusive<i64> = 0..=3_600_000;
pub const MAX_HOSTS: RangeInclusive<i64> = 1..=1_000_000;
/// A command's time limit: a week at most (no limit: leave it out).
pub const TIME_LIMIT: RangeInclusive<f64> = 0.001..=604_800.0;
/// A message body: 1 KiB to RabbitMQ's own default limit, 128 MiB.
pub const MESSAGE_BYTES: RangeInclusive<i64> = 1024..=134_217_728;
/// How long a job runs before the store holds it instead of the broker: at least a second.
pub const LEASE_AFTER: RangeInclusive<f64> = 1.0..=86_400.0;
/// A lease's life between renewals: long enough for three renewals to be tried.
pub const LEASE: RangeInclusive<f64> = 3.0..=3_600.0;
/// Between TERM and KILL: an hour at most.
pub const KILL_GRACE: RangeInclusive<f64> = 0.0..=3_600.0;

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

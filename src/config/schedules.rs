//! `[schedules.NAME]` and `[retention]`: what fires when, and how long finished jobs stay.
//! Each mistake is refused at its line and column: a bad cron expression or period, an unknown
//! time zone, a task no queue lists, `catch_up` or `overlap` not one of theirs.

use std::ops::Range;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::limits::in_range;
use super::{ConfigError, QueueConfig};
use crate::schedules::{CatchUp, Overlap, Schedule, When};

/// `catch_up = "all"` fires at most this many missed slots unless `max_catch_up` says.
const MAX_CATCH_UP: u32 = 100;
/// `max_catch_up`'s range.
const CATCH_UP_RANGE: std::ops::RangeInclusive<i64> = 1..=100_000;
/// The shortest `every`: the tick's precision is a tenth of it.
const EVERY_MIN: Duration = Duration::from_secs(1);
/// `keep_last`'s range, and its default.
const KEEP_LAST_RANGE: std::ops::RangeInclusive<i64> = 0..=100_000_000;
const KEEP_LAST: u64 = 1000;
/// How often each worker prunes, unless `[retention] interval` says.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    task: Spanned<String>,
    args: Option<Spanned<Vec<toml::Value>>>,
    kwargs: Option<Spanned<toml::Table>>,
    cron: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    catch_up: Option<Spanned<String>>,
    max_catch_up: Option<Spanned<i64>>,
    overlap: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    succeeded: Option<Spanned<String>>,
    failed: Option<Spanned<String>>,
    keep_last: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
}

/// `[retention]`: finished jobs older than their state's age are deleted, in batches, by every
/// worker; the newest `keep_last` of each task stay whatever their age. Without the table,
/// nothing is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// SUCCESS jobs finished longer ago than this go; `None` keeps them.
    pub succeeded: Option<Duration>,
    /// FAILURE and REVOKED jobs finished longer ago than this go; `None` keeps them.
    pub failed: Option<Duration>,
    pub keep_last: u64,
    /// How often each worker prunes.
    pub interval: Duration,
}

type At<'a> = &'a dyn Fn(Option<Range<usize>>, String) -> ConfigError;

/// Every `[schedules.NAME]`, in file order.
pub(super) fn resolve(
    raw: &IndexMap<String, Spanned<RawSchedule>>,
    queues: &[QueueConfig],
    at: At<'_>,
) -> Result<IndexMap<String, Schedule>, ConfigError> {
    let mut out = IndexMap::with_capacity(raw.len());
    for (name, table) in raw {
        let key = format!("schedules.{name}");
        if !plain_name(name) {
            return Err(at(
                Some(table.span()),
                format!(
                    "[{key}]: a schedule's name is letters, digits, '-', '_', '.', at most 100"
                ),
            ));
        }
        out.insert(name.clone(), one(name, &key, table, queues, at)?);
    }
    Ok(out)
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn one(
    name: &str,
    key: &str,
    table: &Spanned<RawSchedule>,
    queues: &[QueueConfig],
    at: At<'_>,
) -> Result<Schedule, ConfigError> {
    let raw = table.get_ref();
    let task = raw.task.get_ref();
    let queue = queues
        .iter()
        .find(|q| q.tasks.iter().any(|t| t == task))
        .ok_or_else(|| {
            at(
                Some(raw.task.span()),
                format!(
                    "{key}.task: no queue lists {task:?}; add it to a [queues.NAME] tasks list"
                ),
            )
        })?;
    let when = match (&raw.cron, &raw.every) {
        (Some(cron), None) => When::Cron(Box::new(parse_cron(cron, key, at)?)),
        (None, Some(every)) => When::Every(parse_every(every, key, at)?),
        (Some(_), Some(every)) => {
            return Err(at(
                Some(every.span()),
                format!("{key}: cron and every both given; keep one"),
            ))
        }
        (None, None) => {
            return Err(at(
                Some(table.span()),
                format!("{key}: no cron or every: add cron = \"30 2 * * *\" or every = \"30s\""),
            ))
        }
    };
    let timezone = match &raw.timezone {
        None => chrono_tz::UTC,
        Some(tz) => tz.get_ref().parse::<chrono_tz::Tz>().map_err(|_| {
            at(
                Some(tz.span()),
                format!(
                    "{key}.timezone: unknown time zone {:?} (an IANA name, as Europe/Berlin or UTC)",
                    tz.get_ref()
                ),
            )
        })?,
    };
    let catch_up = pick(
        &raw.catch_up,
        key,
        "catch_up",
        &CatchUp::NAMES,
        at,
        CatchUp::parse,
    )?
    .unwrap_or(CatchUp::Once);
    let overlap = pick(
        &raw.overlap,
        key,
        "overlap",
        &Overlap::NAMES,
        at,
        Overlap::parse,
    )?
    .unwrap_or(Overlap::Skip);
    let max_catch_up = in_range(
        &at,
        &format!("{key}.max_catch_up"),
        raw.max_catch_up.as_ref(),
        CATCH_UP_RANGE,
    )?
    .map_or(MAX_CATCH_UP, |n| u32::try_from(n).unwrap_or(MAX_CATCH_UP));
    let args = serde_json::to_string(&(
        raw.args
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        raw.kwargs
            .as_ref()
            .map(|k| k.get_ref().clone())
            .unwrap_or_default(),
    ))
    .map_err(|e| {
        at(
            Some(table.span()),
            format!("{key}: its args or kwargs: {e}"),
        )
    })?;
    Ok(Schedule {
        name: name.to_string(),
        task: task.clone(),
        queue: queue.name.clone(),
        args,
        when,
        timezone,
        catch_up,
        max_catch_up,
        overlap,
    })
}

fn parse_cron(cron: &Spanned<String>, key: &str, at: At<'_>) -> Result<croner::Cron, ConfigError> {
    let text = cron.get_ref();
    let fields = text.split_whitespace().count();
    let bad = |why: String| {
        at(
            Some(cron.span()),
            format!("{key}.cron: {text:?}: {why} (5 fields: minute hour day month weekday; or 6 with seconds first)"),
        )
    };
    if !(5..=6).contains(&fields) && !text.trim_start().starts_with('@') {
        return Err(bad(format!("{fields} fields")));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| bad(e.to_string()))
}

fn parse_every(every: &Spanned<String>, key: &str, at: At<'_>) -> Result<Duration, ConfigError> {
    let text = every.get_ref();
    let period = duration(every, &format!("{key}.every"), at)?;
    if period < EVERY_MIN || period.subsec_millis() != 0 {
        return Err(at(
            Some(every.span()),
            format!("{key}.every: {text:?}: a whole number of seconds, at least 1s"),
        ));
    }
    Ok(period)
}

/// A duration as humantime writes it ("30s", "7d", "1h 30m").
fn duration(value: &Spanned<String>, key: &str, at: At<'_>) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.get_ref()).map_err(|e| {
        at(
            Some(value.span()),
            format!(
                "{key}: {:?}: {e} (as \"30s\", \"15m\", \"7d\")",
                value.get_ref()
            ),
        )
    })
}

fn pick<T: Copy>(
    value: &Option<Spanned<String>>,
    key: &str,
    field: &str,
    names: &[&str],
    at: At<'_>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    parse(v.get_ref()).map(Some).ok_or_else(|| {
        at(
            Some(v.span()),
            format!(
                "{key}.{field}: {:?} is not one of {}",
                v.get_ref(),
                names.join(", ")
            ),
        )
    })
}

/// `[retention]`, if the file has it.
pub(super) fn retention(
    raw: Option<&RawRetention>,
    at: At<'_>,
) -> Result<Option<Retention>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let age = |v: &Option<Spanned<String>>, key: &str| {
        v.as_ref()
            .map(|v| duration(v, &format!("retention.{key}"), at))
            .transpose()
    };
    let interval = age(&raw.interval, "interval")?.unwrap_or(PRUNE_INTERVAL);
    if interval < Duration::from_secs(1) {
        let span = raw.interval.as_ref().map(Spanned::span);
        return Err(at(span, "retention.interval: at least 1s".into()));
    }
    Ok(Some(Retention {
        succeeded: age(&raw.succeeded, "succeeded")?,
        failed: age(&raw.failed, "failed")?,
        keep_last: in_range(
            &at,
            "retention.keep_last",
            raw.keep_last.as_ref(),
            KEEP_LAST_RANGE,
        )?
        .map_or(KEEP_LAST, |n| u64::try_from(n).unwrap_or(KEEP_LAST)),
        interval,
    }))
}

#[cfg(test)]
mod tests;

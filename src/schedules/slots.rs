//! A schedule's slots, in ms since the Unix epoch: the first after a time, the newest at or
//! before one, and those in between two times.
//!
//! Cron expressions go through croner in the schedule's time zone (chrono-tz), so daylight
//! saving time is handled as Vixie cron does (croner's README, "DST Handling"): a fixed time of
//! day that falls into the spring gap fires at the first time after the gap (02:30 in
//! Europe/Berlin on its spring day fires at 03:00 CEST), and fires once on the autumn day that
//! repeats it (at its first pass, CEST); an expression with a wildcard or a step in its second,
//! minute or hour field fires in both passes of the repeated hour and not in the gap. Slots are
//! whole seconds.

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;

use super::{Schedule, When};

/// Whole seconds: a slot is never within a second.
fn floor_second(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
}

fn at(tz: Tz, ms: i64) -> Option<DateTime<Tz>> {
    tz.timestamp_millis_opt(ms).single()
}

impl Schedule {
    /// The first slot strictly after `ms`; `None` when the expression has none (a date that
    /// never comes, as `0 0 30 2 *`).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        match &self.when {
            When::Every(period) => {
                let p = period_ms(*period);
                Some((ms.div_euclid(p) + 1) * p)
            }
            When::Cron(cron) => {
                let from = at(self.timezone, floor_second(ms))?;
                let next = cron.find_next_occurrence(&from, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The newest slot at or before `ms`.
    pub fn at_or_before(&self, ms: i64) -> Option<i64> {
        match &self.when {
            When::Every(period) => {
                let p = period_ms(*period);
                Some(ms.div_euclid(p) * p)
            }
            When::Cron(cron) => {
                let from = at(self.timezone, floor_second(ms))?;
                let prev = cron.find_previous_occurrence(&from, true).ok()?;
                Some(prev.timestamp_millis())
            }
        }
    }

    /// The slots in `(after, until]`: the newest `newest` of them, oldest first, and how many
    /// there are in all (counted up to [`COUNT_LIMIT`] for a cron expression).
    pub fn between(&self, after: i64, until: i64, newest: usize) -> (Vec<i64>, u64) {
        if until <= after {
            return (Vec::new(), 0);
        }
        if let When::Every(period) = &self.when {
            let p = period_ms(*period);
            let (first, last) = (after.div_euclid(p) + 1, until.div_euclid(p));
            if last < first {
                return (Vec::new(), 0);
            }
            let total = u64::try_from(last - first + 1).unwrap_or(u64::MAX);
            let keep = i64::try_from(newest)
                .unwrap_or(i64::MAX)
                .min(last - first + 1);
            let slots = (last - keep + 1..=last).map(|n| n * p).collect();
            return (slots, total);
        }
        // Newest first, backwards from `until`, then the older ones counted forwards.
        let mut slots = Vec::new();
        let mut cursor = self.at_or_before(until);
        while let Some(slot) = cursor.filter(|s| *s > after) {
            if slots.len() == newest {
                break;
            }
            slots.push(slot);
            cursor = self.at_or_before(slot - 1000);
        }
        slots.reverse();
        let mut total = slots.len() as u64;
        if slots.len() == newest {
            let oldest = slots.first().copied().unwrap_or(until);
            let mut next = self.next_after(after);
            while let Some(slot) = next.filter(|s| *s < oldest) {
                total += 1;
                if total >= COUNT_LIMIT {
                    break;
                }
                next = self.next_after(slot);
            }
        }
        (slots, total)
    }
}

/// Missed slots of a cron expression counted one by one up to this (`every` counts exactly).
pub const COUNT_LIMIT: u64 = 100_000;

fn period_ms(period: std::time::Duration) -> i64 {
    i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests;

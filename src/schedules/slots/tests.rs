//! Slots across daylight saving time in Europe/Berlin (2026: spring forward on 29 March at
//! 02:00 CET to 03:00 CEST; fall back on 25 October at 03:00 CEST to 02:00 CET), and `every`.

use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::schedules::{CatchUp, Overlap, Schedule, When};

fn cron(pattern: &str, tz: chrono_tz::Tz) -> Schedule {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(pattern)
        .expect("pattern");
    Schedule {
        name: "s".into(),
        task: "t".into(),
        queue: "q".into(),
        args: "[[], {}]".into(),
        when: When::Cron(Box::new(cron)),
        timezone: tz,
        catch_up: CatchUp::Once,
        max_catch_up: 100,
        overlap: Overlap::Skip,
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("time")
        .timestamp_millis()
}

fn slots(s: &Schedule, from: i64, until: i64) -> Vec<i64> {
    s.between(from, until, 1000).0
}

#[test]
fn a_fixed_time_in_the_spring_gap_fires_once_after_it() {
    let s = cron("30 2 * * *", chrono_tz::Europe::Berlin);
    // 28 March 02:30 CET is 01:30 UTC; 29 March has no 02:30: 03:00 CEST is 01:00 UTC;
    // 30 March 02:30 CEST is 00:30 UTC.
    assert_eq!(
        slots(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 12, 0)),
        vec![
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 30, 0, 30)
        ]
    );
}

#[test]
fn a_fixed_time_in_the_autumn_repeat_fires_once_at_its_first_pass() {
    let s = cron("30 2 * * *", chrono_tz::Europe::Berlin);
    // 25 October 02:30 comes twice: 00:30 UTC (CEST) and 01:30 UTC (CET); only the first.
    assert_eq!(
        slots(&s, utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0)),
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    );
}

#[test]
fn an_interval_fires_in_both_passes_of_the_repeat_and_not_in_the_gap() {
    let s = cron("*/30 * * * *", chrono_tz::Europe::Berlin);
    // Autumn: 02:00 and 02:30 local twice each, so every 30 real minutes goes on.
    let autumn = slots(&s, utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 2, 0));
    assert_eq!(
        autumn,
        vec![
            utc(2026, 10, 25, 0, 0),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 0),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2, 0)
        ]
    );
    // Spring: 01:30 CET (00:30 UTC), then 03:00 CEST (01:00 UTC): the gap's slots are not.
    let spring = slots(&s, utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 30));
    assert_eq!(
        spring,
        vec![
            utc(2026, 3, 29, 0, 30),
            utc(2026, 3, 29, 1, 0),
            utc(2026, 3, 29, 1, 30)
        ]
    );
}

#[test]
fn next_after_and_at_or_before_agree_with_between() {
    let s = cron("30 2 * * *", chrono_tz::Europe::Berlin);
    let gap_day = utc(2026, 3, 29, 1, 0);
    assert_eq!(s.next_after(utc(2026, 3, 28, 12, 0)), Some(gap_day));
    assert_eq!(s.at_or_before(gap_day + 500), Some(gap_day));
    assert_eq!(s.next_after(gap_day), Some(utc(2026, 3, 30, 0, 30)));
}

#[test]
fn six_fields_have_seconds() {
    let s = cron("*/15 * * * * *", chrono_tz::UTC);
    let t = utc(2026, 1, 1, 0, 0);
    assert_eq!(slots(&s, t, t + 60_000).len(), 4);
    assert_eq!(s.next_after(t + 500), Some(t + 15_000));
}

#[test]
fn every_is_counted_from_the_epoch_and_counts_exactly() {
    let mut s = cron("* * * * *", chrono_tz::UTC);
    s.when = When::Every(Duration::from_secs(30));
    assert_eq!(s.next_after(65_000), Some(90_000));
    assert_eq!(s.at_or_before(65_000), Some(60_000));
    let (newest, total) = s.between(0, 3_600_000, 2);
    assert_eq!(newest, vec![3_570_000, 3_600_000]);
    assert_eq!(total, 120);
}

#[test]
fn cron_counts_beyond_the_newest_it_returns() {
    let s = cron("* * * * *", chrono_tz::UTC);
    let t = utc(2026, 1, 1, 0, 0);
    let (newest, total) = s.between(t, t + 3_600_000, 3);
    assert_eq!(newest.len(), 3);
    assert_eq!(total, 60);
}

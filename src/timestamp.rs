//! ISO 8601 timestamps as Celery clients write them in a message's `eta` and `expires` headers
//! (`datetime.isoformat()`: `2026-12-01T22:05:43.123456+00:00`), read to milliseconds since the
//! Unix epoch, and written back the same way (UTC).
//!
//! A parser of its own rather than a date crate: this is the one format cm reads, and a few
//! lines of civil-date arithmetic cost less than a dependency in every build.

/// Why a header's text is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an ISO 8601 time ({why})")]
pub struct BadTimestamp {
    pub text: String,
    pub why: &'static str,
}

/// Reads `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[:MM]]` to ms since the epoch. A time without
/// an offset is taken as UTC: Celery writes one only when its client was configured with
/// `enable_utc = False` and a naive time, and then means the client's local time, which a
/// worker cannot know.
pub fn parse_ms(text: &str) -> Result<i64, BadTimestamp> {
    let bad = |why| BadTimestamp {
        text: text.to_string(),
        why,
    };
    let s = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, BadTimestamp> {
        let part = s.get(from..from + len).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("a digit expected"));
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, want: &[u8]| s.get(at).is_some_and(|c| want.contains(c));
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !sep(4, b"-") || !sep(7, b"-") || !sep(10, b"Tt ") {
        return Err(bad("expected YYYY-MM-DDTHH:MM"));
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    if !sep(13, b":") {
        return Err(bad("expected HH:MM"));
    }
    let mut at = 16;
    let mut second = 0;
    let mut millis = 0;
    if sep(at, b":") {
        second = num(at + 1, 2)?;
        at += 3;
        if sep(at, b".,") {
            at += 1;
            let digits = s[at..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad("a fraction of a second expected"));
            }
            // Milliseconds: the first three digits, the rest dropped.
            millis = (0..3).fold(0, |n, i| {
                n * 10
                    + s.get(at + i)
                        .filter(|_| i < digits)
                        .map_or(0, |d| i64::from(d - b'0'))
            });
            at += digits;
        }
    }
    let offset_min = match s.get(at) {
        None => 0,
        Some(b'Z' | b'z') if at + 1 == s.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hours = num(at + 1, 2)?;
            let rest = &s[at + 3..];
            let minutes = match rest {
                [] => 0,
                [b':', ..] if rest.len() == 3 => num(at + 4, 2)?,
                _ if rest.len() == 2 => num(at + 3, 2)?,
                _ => return Err(bad("a UTC offset ±HH:MM expected")),
            };
            if hours > 23 || minutes > 59 {
                return Err(bad("UTC offset out of range"));
            }
            let m = hours * 60 + minutes;
            if sign == b'-' {
                -m
            } else {
                m
            }
        }
        Some(_) => return Err(bad("unexpected text after the time")),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("a field out of range"));
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Ok(seconds * 1_000 + millis)
}

/// Ms since the epoch as Celery writes a time: `2026-12-01T22:05:43.123000+00:00`.
pub fn format_ms(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}000+00:00")
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celerys_isoformat_reads_to_the_millisecond() {
        // date -u -d 2026-12-01T22:05:43Z +%s
        let base = 1_796_162_743_000;
        for (text, ms) in [
            ("2026-12-01T22:05:43.123456+00:00", base + 123),
            ("2026-12-01T22:05:43+00:00", base),
            ("2026-12-01T22:05:43Z", base),
            ("2026-12-01 22:05:43", base),
            ("2026-12-01T22:05", base - 43_000),
            ("2026-12-01T23:05:43.5+01:00", base + 500),
            ("2026-12-01T21:35:43-0030", base),
            ("2026-12-01T22:05:43.1+00", base + 100),
            ("1970-01-01T00:00:00+00:00", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ] {
            assert_eq!(parse_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_time_is_named() {
        for text in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00",
            "2026-02-30T00:00:00",
            "2026-12-01T24:00:00",
            "2026-12-01T22:05:43.+00:00",
            "2026-12-01T22:05:43 UTC",
            "2026-12-01T22:05:43+25:00",
            "2026-12-01T22:05:43Zx",
        ] {
            let err = parse_ms(text);
            assert!(err.is_err(), "{text} read as {err:?}");
        }
        assert_eq!(
            parse_ms("soon").map_err(|e| e.to_string()),
            Err("\"soon\" is not an ISO 8601 time (a digit expected)".into())
        );
    }

    #[test]
    fn written_times_read_back() {
        for ms in [0, 1_796_162_743_123, 951_782_400_000, 4_102_444_799_999] {
            let text = format_ms(ms);
            assert_eq!(parse_ms(&text), Ok(ms), "{text}");
        }
        assert_eq!(
            format_ms(1_796_162_743_123),
            "2026-12-01T22:05:43.123000+00:00"
        );
    }
}

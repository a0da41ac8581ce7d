//! ISO 8601 timestamps as Celery clients write them in a message's `eta` and `expires` headers
//! (`datetime.isoformat()`: `2026-12-01T22:05:43.123456+00:00`), read to milliseconds since the
//! Unix epoch, and written back the same way (UTC). The `time` crate parses and formats.

use time::format_description::well_known::Iso8601;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Why a header's text is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an ISO 8601 time ({why})")]
pub struct BadTimestamp {
    pub text: String,
    pub why: String,
}

/// Reads `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[:MM]]` to ms since the epoch. A time without
/// an offset is taken as UTC: Celery writes one only when its client was configured with
/// `enable_utc = False` and a naive time, and then means the client's local time, which a
/// worker cannot know.
pub fn parse_ms(text: &str) -> Result<i64, BadTimestamp> {
    let trimmed = text.trim();
    // Python's isoformat(" ") and str(datetime) put a space where ISO 8601 has the T.
    let iso = match trimmed.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &trimmed[..10], &trimmed[11..]),
        _ => trimmed.to_string(),
    };
    let at = OffsetDateTime::parse(&iso, &Iso8601::DEFAULT).or_else(|with_offset| {
        PrimitiveDateTime::parse(&iso, &Iso8601::DEFAULT)
            .map(|naive| naive.assume_offset(UtcOffset::UTC))
            .map_err(|_| with_offset)
    });
    let at = at.map_err(|e| BadTimestamp {
        text: text.to_string(),
        why: e.to_string(),
    })?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| BadTimestamp {
        text: text.to_string(),
        why: "out of range".into(),
    })
}

/// Ms since the epoch as Celery writes a time: `2026-12-01T22:05:43.123000+00:00`.
pub fn format_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
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
            "2026-12-01T22:05:43Zx",
        ] {
            let err = parse_ms(text);
            assert!(err.is_err(), "{text} read as {err:?}");
        }
        let err = parse_ms("soon").map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.starts_with("\"soon\" is not an ISO 8601 time (")),
            "{err:?}"
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

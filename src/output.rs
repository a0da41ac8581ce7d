//! Command output on stdout. `cm jobs --json | head` closes the pipe early: that is the reader's
//! choice, not an error, so cm stops quietly instead of panicking like `println!` would.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: reports for people are left out; data (ids, JSON, tables asked for) and errors stay.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes `args` to stdout; on a closed pipe, exits 0 at once.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `println!` for command output.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

/// A report line for people (what was started, stopped, removed); left out under `--quiet`.
#[macro_export]
macro_rules! noteln {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            $crate::outln!($($arg)*)
        }
    };
}

/// `ms` since the Unix epoch as RFC 3339 UTC to the second, or `None` for a time that has no
/// such form (before 1970 or after 9999, which humantime refuses by panicking in `to_string`).
pub fn utc_seconds(ms: i64) -> Option<String> {
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    let ms = u64::try_from(ms).ok().filter(|ms| *ms < YEAR_10000_MS)?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_what_rfc_3339_writes_are_none_not_a_panic() {
        assert_eq!(utc_seconds(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(utc_seconds(-1), None);
        assert_eq!(utc_seconds(i64::MAX), None);
        assert_eq!(
            utc_seconds(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
    }
}

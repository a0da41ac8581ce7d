//! Waiting for what happens elsewhere (workers, the broker, a browser), with a deadline and the
//! name of what was awaited when it never came.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Polls `cond` until true; panics with `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` until it gives a value; panics with `what` after `timeout`.
pub fn eventually_some<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line from `lines` that `wanted` takes, within `timeout`; else every line seen.
pub fn line_within(
    lines: &Receiver<String>,
    timeout: Duration,
    mut wanted: impl FnMut(&str) -> bool,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    Err(seen)
}

/// Now, in seconds since the epoch (as Python's `time.time()`).
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until `at` (seconds since the epoch) has passed.
pub fn sleep_until_s(at: f64) {
    while now_s() < at {
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! A worker's job lines (`[time] node job id task: STATE`), written in batches.
//!
//! A job says six lines; one write(2) each was a tenth of a worker's CPU on a busy queue. Lines
//! collect here and go out together: before any ack is sent (so every acked job's lines are in
//! the log: a killed worker loses only lines of jobs that will run again), before the status
//! store's writer commits (a state anyone can read there has its line in the log), whenever the
//! worker runs out of work (`flush` from the runtime's park hook: an idle or slow queue sees each
//! line at once), before any tracing line (the log keeps its order), and at every `FLUSH_AT`
//! bytes.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines wait for at most this much company on a queue that never idles.
const FLUSH_AT: usize = 32 * 1024;

struct Pending {
    buf: Vec<u8>,
    /// The `[time]` of the last line and its millisecond: a busy worker says many lines per
    /// millisecond, and formatting the time was a third of a line's cost.
    stamp: Vec<u8>,
    stamp_ms: u128,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    buf: Vec::new(),
    stamp: Vec::new(),
    stamp_ms: 0,
});

fn pending() -> MutexGuard<'static, Pending> {
    // A panic mid-append leaves at worst a partial line: keep logging rather than stop.
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Queues one line: `[time] ` (RFC 3339, milliseconds, UTC), then `parts` one after another,
/// then a newline. Pieces rather than `format_args!`: no formatting machinery per line.
pub fn line(parts: &[&str]) {
    let now = SystemTime::now();
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut p = pending();
    if p.stamp.is_empty() || p.stamp_ms != ms {
        p.stamp.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(p.stamp, "[{}] ", humantime::format_rfc3339_millis(now));
        p.stamp_ms = ms;
    }
    let Pending { buf, stamp, .. } = &mut *p;
    buf.extend_from_slice(stamp);
    for part in parts {
        buf.extend_from_slice(part.as_bytes());
    }
    buf.push(b'\n');
    if buf.len() >= FLUSH_AT {
        write_out(buf);
    }
}

/// Writes every queued line to stdout (the worker's log).
pub fn flush() {
    let mut p = pending();
    if !p.buf.is_empty() {
        write_out(&mut p.buf);
    }
}

fn write_out(buf: &mut Vec<u8>) {
    // A full disk loses log lines, never jobs: a failed write is not an error for the job.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_until_flushed() {
        line(&["joblog test ", "1"]);
        line(&["joblog test 2"]);
        let text = String::from_utf8(pending().buf.clone()).expect("utf-8");
        let mut lines = text.lines().rev().take(2).collect::<Vec<_>>();
        lines.reverse();
        for (l, want) in lines.iter().zip(["joblog test 1", "joblog test 2"]) {
            // `[2026-11-27T12:00:00.123Z] ` then the parts.
            let (stamp, rest) = l.split_at(27);
            assert_eq!(rest, want, "{l}");
            assert!(stamp.starts_with('[') && stamp.ends_with("Z] "), "{l}");
            let time = humantime::parse_rfc3339(&stamp[1..25]).expect("an RFC 3339 time");
            let age = SystemTime::now()
                .duration_since(time)
                .expect("not in the future");
            assert!(age.as_secs() < 60, "{l}");
        }
        flush();
        assert!(pending().buf.is_empty());
    }
}

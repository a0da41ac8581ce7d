//! A worker's job lines (`[time] node job id task: STATE`), written in batches.
//!
//! A job says six lines; one write(2) each was a tenth of a worker's CPU on a busy queue. Lines
//! collect here and go out together: before any ack is sent (so every acked job's lines are in
//! the log: a killed worker loses only lines of jobs that will run again), before the status
//! store's writer commits (a state anyone can read there has its line in the log), whenever the
//! worker runs out of work (`flush` from the runtime's park hook: an idle or slow queue sees each
//! line at once), before any tracing line (the log keeps its order), and at every `FLUSH_AT`
//! bytes.
//!
//! Every part of a line has its control characters escaped (`\n` as the two characters `\n`),
//! and so has every tracing line ([`OneLine`]): a value from a message can never start a line
//! of its own, so no job's history can be forged by another job's arguments.

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
        push_escaped(buf, part, false);
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

/// Whether `bytes` may hold a control character (the C1 ones are `0xC2 0x80..=0x9F` in
/// UTF-8): a byte scan, so that the usual line is copied as it is. Every job's lines pass
/// here, so the scan goes 32 bytes at a time without a branch per byte (the compiler makes
/// vector compares of the fold); `any` byte by byte cost about 6k instructions a job.
fn may_need_escaping(bytes: &[u8], keep_esc: bool) -> bool {
    // 0xFF never occurs in UTF-8: with it, no byte is let through as ESC.
    let esc = if keep_esc { 0x1b } else { 0xff };
    let hit = |b: u8| (b < 0x20 && b != esc) | (b == 0x7f) | (b == 0xc2);
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |seen, &b| seen | hit(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| hit(b))
}

/// Appends `text` with each control character escaped as Rust writes it (`\n`, `\r`, `\t`,
/// `\u{1b}`); `keep_esc` lets ESC through (a terminal's colours).
fn push_escaped(buf: &mut Vec<u8>, text: &str, keep_esc: bool) {
    if !may_need_escaping(text.as_bytes(), keep_esc) {
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_control() && !(keep_esc && c == '\u{1b}')) {
        buf.extend_from_slice(&rest.as_bytes()[..at]);
        let c = rest[at..].chars().next().unwrap_or_default();
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{}", c.escape_debug());
        rest = &rest[at + c.len_utf8()..];
    }
    buf.extend_from_slice(rest.as_bytes());
}

/// A writer for tracing's lines that keeps each one line: every control character before the
/// line's own final newline is escaped. `keep_esc` is for a terminal with colours.
pub struct OneLine<W> {
    inner: W,
    keep_esc: bool,
}

impl<W: Write> OneLine<W> {
    pub fn new(inner: W, keep_esc: bool) -> Self {
        Self { inner, keep_esc }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for OneLine<W> {
    /// Takes a whole formatted line (tracing writes each event at once).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end): (&[u8], &[u8]) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, b"\n"),
            None => (buf, b""),
        };
        if !may_need_escaping(body, self.keep_esc) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        push_escaped(&mut out, &String::from_utf8_lossy(body), self.keep_esc);
        out.extend_from_slice(end);
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

    #[test]
    fn values_cannot_start_a_line_of_their_own() {
        let forged = "h1\n[2026-01-01T00:00:00.000Z] w@h job other cm.launch: FAILURE forged\r";
        let mut buf = Vec::new();
        push_escaped(&mut buf, forged, false);
        let text = String::from_utf8(buf).expect("utf-8");
        assert_eq!(
            text,
            "h1\\n[2026-01-01T00:00:00.000Z] w@h job other cm.launch: FAILURE forged\\r"
        );
        let escaped = |text: &str| {
            let mut buf = Vec::new();
            push_escaped(&mut buf, text, false);
            String::from_utf8(buf).expect("utf-8")
        };
        assert_eq!(
            escaped("a\tb\u{1b}[31m\u{85}\u{7f}é"),
            "a\\tb\\u{1b}[31m\\u{85}\\u{7f}é"
        );
        assert_eq!(escaped("plain: état ©"), "plain: état ©");
        // Wherever it falls in a long value (the scan's 32-byte chunks and their remainder),
        // a control character is found; a long clean value is copied as it is.
        let long = "x".repeat(100);
        assert_eq!(escaped(&long), long);
        for at in 0..long.len() {
            for (control, shown) in [("\n", "\\n"), ("\u{7f}", "\\u{7f}"), ("\u{85}", "\\u{85}")] {
                let mut forged = long.clone();
                forged.insert_str(at, control);
                let want = format!("{}{shown}{}", &long[..at], &long[at..]);
                assert_eq!(escaped(&forged), want, "at {at}");
            }
        }

        let mut out = OneLine::new(Vec::new(), false);
        out.write_all(b"WARN job x: a\nb\n")
            .expect("a Vec takes it");
        assert_eq!(out.inner, b"WARN job x: a\\nb\n");
        let mut colours = OneLine::new(Vec::new(), true);
        colours
            .write_all(b"\x1b[33mWARN\x1b[0m a\rb\n")
            .expect("a Vec takes it");
        assert_eq!(colours.inner, b"\x1b[33mWARN\x1b[0m a\\rb\n");
    }
}

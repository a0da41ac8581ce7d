//! A worker's job lines (`[time] node job id task: STATE`), written in batches.
//!
//! A job says six lines; one write(2) each was a tenth of a worker's CPU on a busy queue. Lines
//! collect here and go out together: before any ack is sent (so every acked job's lines are in
//! the log: a killed worker loses only lines of jobs that will run again), before the status
//! store's writer commits (a state anyone can read there has its line in the log), whenever the worker
//! runs out of work (`flush` from the runtime's park hook: an idle or slow queue sees each line at
//! once), before any tracing line (the log keeps its order), and at every `FLUSH_AT` bytes.

use std::fmt;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

/// Lines wait for at most this much company on a queue that never idles.
const FLUSH_AT: usize = 32 * 1024;

static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<u8>> {
    // A panic mid-append leaves at worst a partial line: keep logging rather than stop.
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Queues one line (a newline is added).
pub fn line(args: fmt::Arguments<'_>) {
    let mut buf = pending();
    // Writing into a Vec cannot fail.
    let _ = buf.write_fmt(args);
    buf.push(b'\n');
    if buf.len() >= FLUSH_AT {
        write_out(&mut buf);
    }
}

/// Writes every queued line to stdout (the worker's log).
pub fn flush() {
    let mut buf = pending();
    if !buf.is_empty() {
        write_out(&mut buf);
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
        line(format_args!("joblog test {}", 1));
        line(format_args!("joblog test 2"));
        assert!(pending().ends_with(b"joblog test 1\njoblog test 2\n"));
        flush();
        assert!(pending().is_empty());
    }
}

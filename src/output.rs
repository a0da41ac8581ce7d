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

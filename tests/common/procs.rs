//! Processes as the tests see them: alive or not, a pid file's lock held, who runs what (from
//! /proc), signals, and children that go when the test does, however it ends.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;

pub use nix::sys::signal::Signal;

/// Running (not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Whether someone holds an exclusive flock on `path`.
pub fn locked(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Pids of the live processes whose argv holds each of `words`, from /proc, in order.
pub fn pids_running(words: &[&str]) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if words.iter().all(|w| argv.iter().any(|a| a == w)) && alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// The pid a pid file names.
pub fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("pid file {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("no pid in {} ({e}): {text:?}", path.display()))
}

/// Sends `sig` to `pid`, which must exist.
pub fn signal(pid: i32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Killed {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program())),
        )
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("a pid")
    }

    /// Its stdout (piped), line by line on a channel.
    pub fn lines(&mut self) -> mpsc::Receiver<String> {
        lines_of(self.0.stdout.take().expect("a piped stdout"))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process that is none of cm's (`sleep 60`): cm must never signal it.
pub fn stranger() -> Killed {
    Killed::spawn(Command::new("sleep").arg("60"))
}

/// Whatever `pid` is, SIGKILLed when dropped (a process the test started detached).
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// The lines `from` gives, on a channel that closes at its end.
pub fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

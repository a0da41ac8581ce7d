//! `celery@<name>.pid`: written and flock-held by the worker for its whole life.
//!
//! A pid file whose lock can be taken is stale by definition: it is removed and its pid is never
//! signalled, which is what keeps cm from killing a stranger that reused the pid. The same file
//! and rules serve the web server's `cm-web.pid`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;

use super::role::Role;
use crate::config::Config;
use crate::exit::CmError;

/// What a pid file says about its worker.
#[derive(Debug)]
pub enum Inspection {
    Absent,
    /// Nobody holds the lock; the pid inside is not to be trusted.
    Stale,
    /// A symlink or other non-regular file where a pid file should be: never followed.
    NotAFile,
    Live(LivePid),
}

/// A pid file whose lock is held: its worker is alive. Keeps the file open to see the lock go.
#[derive(Debug)]
pub struct LivePid {
    pub pid: Option<Pid>,
    file: File,
}

impl LivePid {
    /// True once the holder has released the lock (it exited or was killed).
    pub fn released(&self) -> bool {
        match self.file.try_clone() {
            Ok(dup) => Flock::lock(dup, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(_) => false,
        }
    }
}

fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC);
    if write {
        opts.write(true).create(true).mode(0o644);
    }
    opts.open(path)
}

fn read_pid(file: &mut File) -> Option<Pid> {
    let mut text = String::new();
    // A pid file is a few bytes; a huge or binary one is garbage, not a pid.
    file.take(64).read_to_string(&mut text).ok()?;
    let n: i32 = text.trim().parse().ok()?;
    (n > 1).then(|| Pid::from_raw(n))
}

/// Looks at a pid file without changing it.
pub fn inspect(path: &Path) -> io::Result<Inspection> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Inspection::Absent),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Ok(Inspection::NotAFile);
    }
    let file = match open_nofollow(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Inspection::Absent),
        Err(e) => return Err(e),
    };
    let probe = file.try_clone()?;
    match Flock::lock(probe, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => Ok(Inspection::Stale),
        Err((_, Errno::EWOULDBLOCK)) => {
            let mut reader = file.try_clone()?;
            // The worker writes its pid right after taking the lock; give it a moment.
            let mut pid = read_pid(&mut reader);
            for _ in 0..20 {
                if pid.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                let mut again = open_nofollow(path, false)?;
                pid = read_pid(&mut again);
            }
            Ok(Inspection::Live(LivePid { pid, file }))
        }
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}

/// Removes `path` if it is stale (lock free) or not a regular file; never follows a symlink.
/// Returns whether something was removed.
pub fn remove_if_stale(path: &Path) -> io::Result<bool> {
    match inspect(path)? {
        Inspection::Absent | Inspection::Live(_) => Ok(false),
        // Unlinking a symlink removes the link itself, never its target.
        Inspection::NotAFile => std::fs::remove_file(path).map(|_| true),
        Inspection::Stale => {
            let file = match open_nofollow(path, false) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            // Hold the lock while unlinking so a worker starting now cannot lose its fresh file.
            let Ok(locked) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                return Ok(false);
            };
            if !same_inode(&locked, path) {
                return Ok(false);
            }
            std::fs::remove_file(path)?;
            Ok(true)
        }
    }
}

fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("already running: {path} is locked by pid {pid}")]
    Held { path: PathBuf, pid: String },
    #[error("cannot write pid file {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
}

/// The worker's own pid file, locked until [`PidLock::release`] or process exit.
#[derive(Debug)]
pub struct PidLock {
    path: PathBuf,
    file: Flock<File>,
}

impl PidLock {
    /// Creates (or takes over a stale) pid file, locks it and writes our pid, fsynced.
    pub fn acquire(path: &Path) -> Result<Self, AcquireError> {
        let io_err = |cause| AcquireError::Io {
            path: path.to_path_buf(),
            cause,
        };
        // A checker (`cm queue status`) may hold the lock for a moment; wait that out.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let file = open_nofollow(path, true).map_err(io_err)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut locked) => {
                    // A checker may have unlinked the stale file we opened; start over on the new one.
                    if !same_inode(&locked, path) {
                        continue;
                    }
                    locked.set_len(0).map_err(io_err)?;
                    writeln!(locked, "{}", std::process::id()).map_err(io_err)?;
                    locked.sync_all().map_err(io_err)?;
                    return Ok(Self {
                        path: path.to_path_buf(),
                        file: locked,
                    });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        let pid =
                            read_pid(&mut file).map_or_else(|| "?".to_string(), |p| p.to_string());
                        return Err(AcquireError::Held {
                            path: path.to_path_buf(),
                            pid,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
            }
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Removes the file while still holding the lock, then lets the lock go.
    pub fn release(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing pid file {}: {e}", self.path.display());
        }
    }
}

/// Takes `role`'s pid file for this process's whole life; the error says what to do.
pub fn lock(cfg: &Config, role: &Role) -> Result<PidLock, CmError> {
    let path = role.pid_file(cfg);
    PidLock::acquire(&path).map_err(|e| match e {
        AcquireError::Held { pid, .. } if *role == Role::Web => CmError::Other(format!(
            "cm web is already running (pid {pid}, {})",
            path.display()
        )),
        AcquireError::Io { ref cause, .. } if cause.kind() == io::ErrorKind::PermissionDenied => {
            CmError::Permission {
                message: format!("{e} (run with sudo, or set [paths] pid_dir)"),
            }
        }
        other => CmError::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_held_is_live_and_released_is_gone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("celery@t.pid");
        let lock = PidLock::acquire(&path)?;
        let Inspection::Live(live) = inspect(&path)? else {
            panic!("expected a live pid file");
        };
        assert_eq!(live.pid, Some(Pid::from_raw(std::process::id() as i32)));
        assert!(!live.released());
        assert!(!remove_if_stale(&path)?);
        lock.release();
        assert!(live.released());
        assert!(matches!(inspect(&path)?, Inspection::Absent));
        Ok(())
    }

    #[test]
    fn unlocked_file_is_stale_and_removed_symlink_not_followed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("celery@t.pid");
        std::fs::write(&path, "1\n")?;
        assert!(matches!(inspect(&path)?, Inspection::Stale));
        assert!(remove_if_stale(&path)?);
        assert!(!path.exists());

        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me")?;
        std::os::unix::fs::symlink(&target, &path)?;
        assert!(matches!(inspect(&path)?, Inspection::NotAFile));
        assert!(
            PidLock::acquire(&path).is_err(),
            "must not write through a symlink"
        );
        assert!(remove_if_stale(&path)?);
        assert_eq!(std::fs::read_to_string(&target)?, "keep me");
        Ok(())
    }
}

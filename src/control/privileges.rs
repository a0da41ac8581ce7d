//! Dropping root to the configured `user`/`group` once a worker's files are open.

use std::os::fd::AsFd;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::Config;
use crate::exit::CmError;

/// When running as root with `[worker] user` set: hand our open files and the paths the worker
/// writes (pid dir, log dir, SQLite store) to that user, then switch to it for good.
/// Returns the user we now run as, if we switched.
pub fn drop_if_root(
    cfg: &Config,
    files: &[&dyn AsFd],
    paths: &[&Path],
) -> Result<Option<String>, CmError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let Some(user_name) = cfg.user.as_deref() else {
        if cfg.allow_root {
            tracing::warn!(
                "running as root ([worker] allow_root = true in {})",
                cfg.path.display()
            );
            return Ok(None);
        }
        // As Celery refuses: a job running as root can do anything to the machine.
        return Err(CmError::Permission {
            message: format!(
                "refusing to run workers as root: set [worker] user = \"NAME\" in {} (workers drop to it), or allow_root = true",
                cfg.path.display()
            ),
        });
    };
    let bad = |what: String| {
        CmError::BadArgument(format!("{what} (fix [worker] in {})", cfg.path.display()))
    };
    let user = User::from_name(user_name)
        .map_err(|e| bad(format!("looking up user {user_name:?}: {e}")))?
        .ok_or_else(|| bad(format!("no such user {user_name:?}")))?;
    let gid: Gid = match cfg.group.as_deref() {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| bad(format!("looking up group {g:?}: {e}")))?
                .ok_or_else(|| bad(format!("no such group {g:?}")))?
                .gid
        }
        None => user.gid,
    };
    let perm = |what: &str, e: nix::Error| CmError::Permission {
        message: format!("dropping privileges to {user_name}: {what}: {e}"),
    };
    for f in files {
        nix::unistd::fchown(f.as_fd(), Some(user.uid), Some(gid)).map_err(|e| perm("chown", e))?;
    }
    for p in paths.iter().filter(|p| p.exists()) {
        nix::unistd::chown(*p, Some(user.uid), Some(gid))
            .map_err(|e| perm(&format!("chown {}", p.display()), e))?;
    }
    let cname =
        std::ffi::CString::new(user_name).map_err(|_| bad("user name has a NUL byte".into()))?;
    nix::unistd::initgroups(&cname, gid).map_err(|e| perm("initgroups", e))?;
    nix::unistd::setgid(gid).map_err(|e| perm("setgid", e))?;
    nix::unistd::setuid(user.uid).map_err(|e| perm("setuid", e))?;
    // setuid clears "dumpable", which hides /proc/<pid>/exe even from the worker's own user;
    // `cm queue status` run as that user needs it to recognise its workers.
    nix::sys::prctl::set_dumpable(true).map_err(|e| perm("prctl(PR_SET_DUMPABLE)", e))?;
    Ok(Some(user_name.to_string()))
}

//! What a publishing command refuses before anything is built or published (exit 64): a
//! hostlist or a `--count` over `[limits]`, sized before it is expanded, and for `cm call`
//! whatever a worker would refuse, found by the worker's own checks.

use crate::celery::message::TaskMessage;
use crate::config::hostlist::{self, HostlistError};
use crate::config::Config;
use crate::exit::CmError;

/// The hosts of `--hosts`, one job each, `count` times over: refused when the hostlist names
/// more than `[limits] max_hosts` or the jobs would be more than `[limits]
/// max_jobs_per_publish`, both decided before a host is expanded.
pub(super) fn hosts(cfg: &Config, text: &str, count: u32) -> Result<Vec<String>, CmError> {
    let bad = |e: HostlistError| {
        let limit = match e {
            HostlistError::TooMany { .. } => format!(
                " ([limits] max_hosts in {}; one launch per hostlist that size)",
                cfg.path.display()
            ),
            _ => String::new(),
        };
        CmError::BadArgument(format!("--hosts {} {e}{limit}", hostlist::quoted(text)))
    };
    let size = hostlist::size(text).map_err(bad)?;
    let max = cfg.limits.max_hosts;
    if size.hosts > max as u128 {
        return Err(bad(HostlistError::TooMany {
            hosts: size.hosts,
            max,
        }));
    }
    jobs(cfg, size.hosts.saturating_mul(u128::from(count)), || {
        format!("{} host(s) x --count {count}", size.hosts)
    })?;
    hostlist::expand(text, max).map_err(bad)
}

/// `cm call`'s check before it publishes: `--count` within `[limits] max_jobs_per_publish`,
/// and nothing a worker would refuse (an unknown task, arguments that do not fit, an unknown
/// server or recipe, a hostlist over the limit, a value no argv can hold).
pub(super) fn call(cfg: &Config, msg: &TaskMessage, count: u32) -> Result<(), CmError> {
    jobs(cfg, u128::from(count), || format!("--count {count}"))?;
    crate::jobs::screen(msg, cfg)
        .map(|_| ())
        .map_err(|why| CmError::BadArgument(format!("{why}; nothing published")))
}

fn jobs(cfg: &Config, n: u128, what: impl Fn() -> String) -> Result<(), CmError> {
    let max = cfg.limits.max_jobs_per_publish;
    if n <= max as u128 {
        return Ok(());
    }
    Err(CmError::BadArgument(format!(
        "{} is {n} jobs, more than {max} ([limits] max_jobs_per_publish in {})",
        what(),
        cfg.path.display()
    )))
}

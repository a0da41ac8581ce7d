//! `cm queue start|stop|restart|status|clean` (and their `cm server` twins): reports for people.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::control::{self, StartLine, StopAction, StopLine};
use crate::exit::{CmError, Code};

pub async fn start(cfg: &Config, names: &[String]) -> anyhow::Result<Code> {
    let workers = control::select(cfg, names)?;
    let _lock = control::lock_control(cfg)?;
    let (stopped, started) = control::start(cfg, &workers).await?;
    print_stops(&stopped, true);
    print_starts(&started);
    start_verdict(&started)
}

pub(super) fn print_starts(lines: &[StartLine]) {
    for l in lines {
        let pid = l.pid.map_or_else(|| "-".into(), |p| p.to_string());
        match &l.error {
            None => crate::noteln!("{:<8} {:<14} pid {:<8} ready", l.name, l.queue, pid),
            Some(why) => {
                crate::noteln!("{:<8} {:<14} pid {:<8} FAILED: {why}", l.name, l.queue, pid)
            }
        }
    }
}

/// Success, or one error naming each worker that did not start, grouped by reason.
pub(super) fn start_verdict(lines: &[StartLine]) -> anyhow::Result<Code> {
    let failed: Vec<_> = lines.iter().filter(|l| !l.ready).collect();
    if failed.is_empty() {
        return Ok(Code::Success);
    }
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for l in &failed {
        by_reason
            .entry(l.error.as_deref().unwrap_or("unknown"))
            .or_default()
            .push(&l.name);
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(why, names)| format!("{} not started: {why}", names.join(", ")))
        .collect();
    let first = failed[0].code;
    let code = if failed.iter().all(|l| l.code == first) {
        first
    } else {
        Code::Failure
    };
    Err(CmError::Partial {
        message: parts.join("; "),
        code,
    }
    .into())
}

pub(super) fn print_stops(lines: &[StopLine], quiet_when_idle: bool) {
    for l in lines {
        let pid = l.pid.map_or_else(String::new, |p| format!("pid {p}, "));
        match l.action {
            StopAction::Stopped => crate::noteln!("{:<8} stopped ({pid}{:.2}s)", l.name, l.seconds),
            StopAction::Killed => crate::noteln!(
                "{:<8} KILLED after the grace period ({pid}{:.2}s); its unacked jobs return to the queue",
                l.name, l.seconds
            ),
            StopAction::NotRunning if quiet_when_idle => {}
            StopAction::NotRunning => crate::noteln!("{:<8} not running", l.name),
            StopAction::StaleRemoved => {
                crate::noteln!("{:<8} stale pid file removed (its pid was not signalled)", l.name)
            }
            StopAction::Refused => crate::noteln!(
                "{:<8} left alone: {}",
                l.name,
                l.detail.as_deref().unwrap_or("not ours")
            ),
        }
    }
}

pub async fn stop(cfg: &Config, names: &[String]) -> anyhow::Result<Code> {
    let workers = control::select(cfg, names)?;
    let _lock = control::lock_control(cfg)?;
    let lines = control::stop(cfg, &workers, cfg.stop_grace).await?;
    if lines.iter().all(|l| l.action == StopAction::NotRunning) {
        crate::noteln!("no workers running; nothing to stop");
    } else {
        print_stops(&lines, false);
    }
    if lines.iter().any(|l| l.action == StopAction::Refused) {
        return Err(CmError::Partial {
            message: "some pid files are locked by processes that are not this config's workers; see above".into(),
            code: Code::Failure,
        }
        .into());
    }
    Ok(Code::Success)
}

pub async fn restart(cfg: &Config, names: &[String]) -> anyhow::Result<Code> {
    let workers = control::select(cfg, names)?;
    let _lock = control::lock_control(cfg)?;
    let mut all = Vec::new();
    // One at a time: the other workers of the queue keep consuming meanwhile.
    for w in &workers {
        let (stopped, started) = control::start(cfg, std::slice::from_ref(w)).await?;
        print_stops(&stopped, true);
        print_starts(&started);
        all.extend(started);
    }
    start_verdict(&all)
}

pub async fn status(cfg: &Config, names: &[String], json: bool, all: bool) -> anyhow::Result<Code> {
    if all {
        return status_all(cfg, json).await;
    }
    let workers = control::select(cfg, names)?;
    let rows = control::status(cfg, &workers);
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Code::Success);
    }
    crate::outln!(
        "{:<8} {:<14} {:<8} {:<10} {:>9} {:>8} {:>10} {:>10}  BROKER",
        "NAME",
        "QUEUE",
        "PID",
        "STATE",
        "SLOTS",
        "UPTIME",
        "MEMORY",
        "JOBS DONE"
    );
    for r in rows {
        let dash = || "-".to_string();
        crate::outln!(
            "{:<8} {:<14} {:<8} {:<10} {:>9} {:>8} {:>10} {:>10}  {}",
            r.name,
            r.queue,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.state,
            slots(r.concurrency, r.desired_concurrency),
            r.uptime_seconds.map_or_else(dash, human_duration),
            r.memory_bytes
                .map_or_else(dash, |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
            r.jobs_done.map_or_else(dash, |d| match r.jobs_failed {
                Some(f) if f > 0 => format!("{d} ({f} failed)"),
                _ => d.to_string(),
            }),
            r.broker
                .as_deref()
                .map_or_else(dash, crate::config::urls::host_port),
        );
    }
    Ok(Code::Success)
}

pub(super) async fn status_all(cfg: &Config, json: bool) -> anyhow::Result<Code> {
    let workers = crate::amqp::inspect::ping_all(cfg).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(Code::Success);
    }
    if workers.is_empty() {
        crate::outln!("no worker of this config's queues answered on any host");
        return Ok(Code::Success);
    }
    crate::outln!(
        "{:<24} {:<14} {:<8} {:<8} {:>9} {:>8} {:>10} {:>10}  BROKER",
        "NODE",
        "QUEUE",
        "PID",
        "STATE",
        "SLOTS",
        "UPTIME",
        "MEMORY",
        "JOBS DONE"
    );
    for w in workers {
        crate::outln!(
            "{:<24} {:<14} {:<8} {:<8} {:>9} {:>8} {:>10} {:>10}  {}",
            w.node,
            w.queue,
            w.pid,
            w.state,
            slots(w.concurrency, w.desired_concurrency),
            w.uptime_seconds.map_or_else(|| "-".into(), human_duration),
            w.memory_bytes.map_or_else(
                || "-".into(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0)
            ),
            w.jobs_done,
            w.broker
                .as_deref()
                .map_or_else(|| "-".into(), crate::config::urls::host_port),
        );
    }
    Ok(Code::Success)
}

/// A worker's job slots: how many, or while a `cm queue scale` down waits for running jobs,
/// how many now and toward what.
fn slots(now: Option<u16>, asked: Option<u16>) -> String {
    match (now, asked) {
        (Some(n), Some(a)) if n != a => format!("{n} (to {a})"),
        (Some(n), _) => n.to_string(),
        (None, _) => "-".into(),
    }
}

pub(super) fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

pub async fn clean(cfg: &Config, logs: bool) -> anyhow::Result<Code> {
    let _lock = control::lock_control(cfg)?;
    let report = control::clean(cfg, logs).await?;
    for (name, pid, orphan) in &report.killed {
        let what = if *orphan {
            "orphan (no pid file)"
        } else {
            "worker"
        };
        crate::noteln!("killed {what} {name} (pid {pid})");
    }
    for pid in &report.leftovers {
        crate::noteln!("killed what a job's command left running (pid {pid})");
    }
    for path in &report.stale_removed {
        crate::noteln!("removed stale pid file {}", path.display());
    }
    for path in &report.logs_removed {
        crate::noteln!("removed log {}", path.display());
    }
    if report.killed.is_empty()
        && report.leftovers.is_empty()
        && report.stale_removed.is_empty()
        && report.logs_removed.is_empty()
    {
        crate::noteln!("nothing to clean: no workers running and no stale pid files");
    }
    Ok(Code::Success)
}

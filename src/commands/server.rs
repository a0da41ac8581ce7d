//! `cm server start|stop|clean|status`: every worker and the detached web server at once.

use crate::config::Config;
use crate::control::web::{self, WebStatus};
use crate::control::{self, StopAction, StopLine};
use crate::exit::{code_for, CmError, Code};

use super::queue::{human_duration, print_starts, print_stops, start_verdict};

/// Workers as `cm queue start` starts them (running ones stopped first), then the web server
/// on `[web] bind` (a running one stopped first), unless `[web] enabled = false`.
pub async fn start(cfg: &Config) -> anyhow::Result<Code> {
    let workers = control::select(cfg, &[])?;
    if cfg.web_enabled {
        crate::web::preflight(cfg)?;
    }
    let _lock = control::lock_control(cfg)?;
    let (stopped, started) = control::start(cfg, &workers).await?;
    print_stops(&stopped, true);
    print_starts(&started);
    let web = if cfg.web_enabled {
        start_web(cfg).await
    } else {
        println!(
            "{:<8} not started: [web] enabled = false in {}",
            web::NAME,
            cfg.path.display()
        );
        Ok(())
    };
    match (start_verdict(&started), web) {
        (Ok(code), Ok(())) => Ok(code),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
        (Err(workers), Err(web)) => {
            let (a, b) = (code_for(&workers), code_for(&web));
            Err(CmError::Partial {
                message: format!("{workers:#}; {web:#}"),
                code: if a == b { a } else { Code::Failure },
            }
            .into())
        }
    }
}

async fn start_web(cfg: &Config) -> anyhow::Result<()> {
    let stopped = web::stop(cfg, web::STOP_GRACE).await?;
    print_web_stops(&stopped, true);
    match crate::web::start_detached(cfg).await {
        Ok(s) => {
            println!(
                "{:<8} {} pid {} ready (log {})",
                web::NAME,
                s.url,
                s.pid,
                s.log_file.display()
            );
            Ok(())
        }
        Err(e) => {
            println!("{:<8} FAILED: {e:#}", web::NAME);
            let code = code_for(&e);
            Err(CmError::Partial {
                message: format!("web server: {e:#}"),
                code,
            }
            .into())
        }
    }
}

fn print_web_stops(lines: &[StopLine], quiet_when_idle: bool) {
    for l in lines {
        let pid = l.pid.map_or_else(String::new, |p| format!("pid {p}, "));
        let orphan = l
            .detail
            .as_deref()
            .filter(|_| matches!(l.action, StopAction::Stopped | StopAction::Killed))
            .map_or_else(String::new, |d| format!(" {d}"));
        match l.action {
            StopAction::Stopped => {
                println!("{:<8} stopped{orphan} ({pid}{:.2}s)", l.name, l.seconds)
            }
            StopAction::Killed => println!(
                "{:<8} KILLED{orphan} after the grace period ({pid}{:.2}s)",
                l.name, l.seconds
            ),
            StopAction::NotRunning if quiet_when_idle => {}
            StopAction::NotRunning => println!("{:<8} not running", l.name),
            StopAction::StaleRemoved => {
                println!(
                    "{:<8} stale pid file removed (its pid was not signalled)",
                    l.name
                )
            }
            StopAction::Refused => println!(
                "{:<8} left alone: {}",
                l.name,
                l.detail.as_deref().unwrap_or("not ours")
            ),
        }
    }
}

/// Both at once: the workers finish their running jobs while the web server drains.
pub async fn stop(cfg: &Config) -> anyhow::Result<Code> {
    let workers = control::select(cfg, &[])?;
    if cfg.web_enabled {
        crate::web::preflight(cfg)?;
    }
    let _lock = control::lock_control(cfg)?;
    let (lines, web) = tokio::join!(
        control::stop(cfg, &workers, cfg.stop_grace),
        web::stop(cfg, web::STOP_GRACE)
    );
    let (lines, web) = (lines?, web?);
    let idle = |l: &StopLine| l.action == StopAction::NotRunning;
    match (lines.iter().all(idle), web.iter().all(idle)) {
        (true, true) => println!("no workers or web server running; nothing to stop"),
        (true, false) => {
            println!("no workers running");
            print_web_stops(&web, false);
        }
        (false, _) => {
            print_stops(&lines, false);
            print_web_stops(&web, true);
        }
    }
    if lines
        .iter()
        .chain(&web)
        .any(|l| l.action == StopAction::Refused)
    {
        return Err(CmError::Partial {
            message: "some pid files are locked by processes that are not this config's; see above"
                .into(),
            code: Code::Failure,
        }
        .into());
    }
    Ok(Code::Success)
}

pub async fn clean(cfg: &Config, logs: bool) -> anyhow::Result<Code> {
    let _lock = control::lock_control(cfg)?;
    let report = control::clean(cfg, logs).await?;
    let web = web::clean(cfg, logs).await?;
    for (name, pid, orphan) in &report.killed {
        let what = if *orphan {
            "orphan (no pid file)"
        } else {
            "worker"
        };
        println!("killed {what} {name} (pid {pid})");
    }
    for (pid, orphan) in &web.killed {
        let what = if *orphan {
            "orphan (no pid file) web server"
        } else {
            "web server"
        };
        println!("killed {what} (pid {pid})");
    }
    for pid in &report.leftovers {
        println!("killed what a job's command left running (pid {pid})");
    }
    for path in report.stale_removed.iter().chain(&web.stale_removed) {
        println!("removed stale pid file {}", path.display());
    }
    for path in report.logs_removed.iter().chain(&web.logs_removed) {
        println!("removed log {}", path.display());
    }
    let nothing = report.killed.is_empty()
        && report.leftovers.is_empty()
        && report.stale_removed.is_empty()
        && report.logs_removed.is_empty()
        && web.killed.is_empty()
        && web.stale_removed.is_empty()
        && web.logs_removed.is_empty();
    if nothing {
        println!("nothing to clean: no workers or web server running and no stale pid files");
    }
    Ok(Code::Success)
}

/// The workers' table (`cm queue status`), then the web server's line. `--json` prints
/// `{"workers": [...], "web": {...}}`.
pub async fn status(cfg: &Config, json: bool, all: bool) -> anyhow::Result<Code> {
    let web = web::status(cfg);
    if json {
        let workers = if all {
            serde_json::to_value(crate::amqp::inspect::ping_all(cfg).await?)?
        } else {
            let workers = control::select(cfg, &[])?;
            serde_json::to_value(control::status(cfg, &workers))?
        };
        let both = serde_json::json!({ "workers": workers, "web": web });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(Code::Success);
    }
    let code = super::queue::status(cfg, &[], false, all).await?;
    println!("{}", web_line(&web));
    Ok(code)
}

fn web_line(w: &WebStatus) -> String {
    let dash = || "-".to_string();
    let mut line = format!(
        "{:<8} {} pid {} {}",
        web::NAME,
        w.url,
        w.pid.map_or_else(dash, |p| p.to_string()),
        w.state
    );
    if let Some(up) = w.uptime_seconds {
        line.push_str(&format!(", up {}", human_duration(up)));
    }
    if let Some(b) = w.memory_bytes {
        line.push_str(&format!(", {:.1} MiB", b as f64 / 1048576.0));
    }
    if !w.enabled {
        line.push_str(" ([web] enabled = false)");
    }
    line
}

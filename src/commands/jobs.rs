//! `cm jobs`, `cm jobs show ID`, `cm jobs revoke ID...`, `cm db reset`: the status store from the command line.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::JobsArgs;
use crate::config::Config;
use crate::exit::{CmError, Code};
use crate::store::{JobFilter, Store};

fn time(ms: Option<i64>) -> String {
    ms.and_then(crate::output::utc_seconds)
        .unwrap_or_else(|| "-".into())
}

pub async fn list(cfg: &Config, args: &JobsArgs) -> anyhow::Result<Code> {
    let store = Store::open(&cfg.store_url).await?;
    let filter = JobFilter {
        state: args.state.clone(),
        server: args.server.clone(),
        recipe: args.recipe.clone(),
        limit: args.limit,
        ..JobFilter::default()
    };
    let jobs = store.list(&filter).await?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(Code::Success);
    }
    crate::outln!(
        "{:<36} {:<12} {:<9} {:<16} {:<20} {:<20} ERROR",
        "ID",
        "TASK",
        "STATE",
        "WORKER",
        "SUBMITTED",
        "FINISHED"
    );
    for j in &jobs {
        crate::outln!(
            "{:<36} {:<12} {:<9} {:<16} {:<20} {:<20} {}",
            j.id,
            j.task,
            j.state,
            j.worker.as_deref().unwrap_or("-"),
            time(j.submitted_ms),
            time(j.finished_ms),
            j.error.as_deref().unwrap_or("")
        );
    }
    let total = store.count(&JobFilter { limit: 0, ..filter }).await?;
    if total > jobs.len() as i64 {
        crate::outln!("({} of {total} shown; --limit 0 for all)", jobs.len());
    }
    Ok(Code::Success)
}

pub async fn show(cfg: &Config, id: &str, json: bool) -> anyhow::Result<Code> {
    let store = Store::open(&cfg.store_url).await?;
    let job = store
        .get(id)
        .await?
        .ok_or_else(|| CmError::BadArgument(format!("no job {id} in the status store")))?;
    let history = store.history(id).await?;
    if json {
        let mut value = serde_json::to_value(&job)?;
        value["history"] = serde_json::to_value(&history)?;
        crate::outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Code::Success);
    }
    crate::outln!("job {} ({}) on queue {}", job.id, job.task, job.queue);
    crate::outln!(
        "state {}  deliveries {}  retries {}",
        job.state,
        job.deliveries,
        job.retries
    );
    if let Some(when) = message_options(&job.options) {
        crate::outln!("{when}");
    }
    if let Some(e) = &job.error {
        crate::outln!("error {e}");
    }
    if let Some(r) = &job.result {
        crate::outln!("result {r}");
    }
    if let Some(out) = job.output.as_deref().filter(|o| !o.is_empty()) {
        crate::outln!("output (the last 64 KiB):");
        for line in out.lines() {
            crate::outln!("  | {line}");
        }
    }
    for ev in history {
        crate::outln!(
            "  {}  {:<16} {:<16} {}",
            time(Some(ev.at_ms)),
            ev.state,
            ev.worker.unwrap_or_default(),
            ev.detail.unwrap_or_default()
        );
    }
    Ok(Code::Success)
}

/// `cm jobs revoke ID... [--terminate] [--signal SIG]`: one line per job, what it comes to.
pub async fn revoke(
    cfg: &Config,
    ids: &[String],
    terminate: bool,
    signal: Option<&str>,
    json: bool,
) -> anyhow::Result<Code> {
    let signal = signal
        .map(crate::client::revoke::signal_name)
        .transpose()
        .map_err(CmError::BadArgument)?;
    let store = Store::open(&cfg.store_url).await?;
    let by = format!("cm@{}", cfg.node_host);
    let terminate = terminate || signal.is_some();
    let reports = crate::client::revoke::revoke(&store, ids, terminate, signal, &by).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            crate::outln!("{}", r.describe());
        }
    }
    Ok(Code::Success)
}

pub async fn reset(cfg: &Config, yes: bool) -> anyhow::Result<Code> {
    let store = Store::open(&cfg.store_url).await?;
    if !yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(CmError::BadArgument(
                "refusing to delete every job record without a terminal to ask on: pass --yes"
                    .into(),
            )
            .into());
        }
        let n = store.count(&JobFilter::default()).await?;
        crate::out!(
            "Delete all {n} job records from {}? [y/N] ",
            store.location()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            crate::outln!("nothing deleted");
            return Ok(Code::Success);
        }
    }
    let removed = store.reset().await?;
    crate::outln!("removed {removed} job records");
    Ok(Code::Success)
}

/// The message options a scheduled job keeps, as one line (`None`: it has none).
fn message_options(o: &crate::store::MessageOptions) -> Option<String> {
    let seconds = |ms: i64| format!("{} s", ms as f64 / 1000.0);
    let parts: Vec<String> = [
        o.eta_ms.map(|ms| format!("eta {}", time(Some(ms)))),
        o.expires_ms.map(|ms| format!("expires {}", time(Some(ms)))),
        o.time_limit_ms
            .map(|ms| format!("time limit {}", seconds(ms))),
        o.soft_time_limit_ms
            .map(|ms| format!("soft time limit {}", seconds(ms))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join("  "))
}

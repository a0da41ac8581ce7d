//! `cm jobs`, `cm jobs show ID`, `cm jobs revoke ID...`, `cm db reset`: the status store from the command line.

use std::io::{BufRead, IsTerminal, Write};

use super::lookup::{find, open_existing};
use crate::cli::JobsArgs;
use crate::config::Config;
use crate::exit::{CmError, Code};
use crate::store::{JobFilter, Store};

fn time(ms: Option<i64>) -> String {
    ms.and_then(crate::output::utc_seconds)
        .unwrap_or_else(|| "-".into())
}

/// `given` as one of `known`: as written, else the one that differs only in case; else exit
/// 64 listing them.
fn one_of<'a>(what: &str, given: &str, known: &[&'a str]) -> Result<&'a str, CmError> {
    known
        .iter()
        .find(|k| **k == given)
        .or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(given)))
        .copied()
        .ok_or_else(|| {
            CmError::BadArgument(format!(
                "unknown {what} {given:?}: known are {}",
                known.join(", ")
            ))
        })
}

/// Every state a job can be in: cm's own, the simulations' steps, and any other in the
/// store (a command's own `cm-state: NAME` steps).
async fn known_states(store: &Store) -> anyhow::Result<Vec<String>> {
    use crate::store::{
        FAILURE, PENDING, RECEIVED, RETRY, REVOKED, SCHEDULED, STARTED, SUCCESS, THROTTLED, WAITING,
    };
    let mut known: Vec<String> = [
        WAITING, PENDING, SCHEDULED, THROTTLED, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED,
    ]
    .iter()
    .chain(crate::jobs::launch::STEPS)
    .chain(crate::jobs::provision::STEPS)
    .map(|s| s.to_string())
    .collect();
    for (state, _) in store.counts_by_state(&JobFilter::default()).await? {
        if !known.contains(&state) {
            known.push(state);
        }
    }
    Ok(known)
}

pub async fn list(cfg: &Config, args: &JobsArgs) -> anyhow::Result<Code> {
    let store = open_existing(cfg).await?;
    let keys = |m: &indexmap::IndexMap<String, crate::config::Described>| -> Vec<String> {
        m.keys().cloned().collect()
    };
    let (servers, recipes) = (keys(&cfg.servers), keys(&cfg.recipes));
    let pick = |what: &str, given: &Option<String>, known: &[String]| {
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        given
            .as_deref()
            .map(|g| one_of(what, g, &known).map(str::to_string))
            .transpose()
    };
    let state = match &args.state {
        Some(_) => pick("state", &args.state, &known_states(&store).await?)?,
        None => None,
    };
    let filter = JobFilter {
        state,
        server: pick("server", &args.server, &servers)?,
        recipe: pick("recipe", &args.recipe, &recipes)?,
        limit: args.limit,
        ..JobFilter::default()
    };
    let mut jobs = store.list(&filter).await?;
    store.explain_waits(&mut jobs).await?;
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
            j.job.id,
            j.job.task,
            j.state,
            j.worker.as_deref().unwrap_or("-"),
            time(j.job.submitted_ms),
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
    let store = open_existing(cfg).await?;
    let row = find(&store, id).await?;
    let history = store.history(&row.job.id).await?;
    if json {
        let mut value = serde_json::to_value(&row)?;
        value["history"] = serde_json::to_value(&history)?;
        value["links"] = serde_json::to_value(store.links(&row.job.id).await?)?;
        crate::outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(Code::Success);
    }
    crate::outln!(
        "job {} ({}) on queue {}",
        row.job.id,
        row.job.task,
        row.job.queue
    );
    crate::outln!(
        "state {}  deliveries {}  retries {}  attempt {}",
        row.state,
        row.deliveries,
        row.retries,
        row.retries + 1
    );
    // A retry waits in the store, SCHEDULED at its eta, as a countdown does.
    if row.retries > 0 && row.state == crate::store::SCHEDULED {
        if let Some(eta) = row.job.options.eta_ms {
            crate::outln!("next try {}", time(Some(eta)));
        }
    }
    if let Some(when) = message_options(&row.job.options) {
        crate::outln!("{when}");
    }
    if let Some(why) = row.waiting_for() {
        crate::outln!("waits for {why}");
    }
    if let Some(canvas) = canvas_line(&row.job.options) {
        crate::outln!("{canvas}");
    }
    if let Some(e) = &row.error {
        crate::outln!("error {e}");
    }
    if let Some(r) = &row.result {
        crate::outln!("result {r}");
    }
    super::workflow::show_links(&store, &row.job.id).await?;
    if let Some(out) = row.output.as_deref().filter(|o| !o.is_empty()) {
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

/// Where a job stands in a Celery canvas (its group, the job whose end published it, the first
/// of its workflow), as one line (`None`: it stands in none).
fn canvas_line(o: &crate::store::MessageOptions) -> Option<String> {
    let parts: Vec<String> = [
        crate::store::canvas_group(o).map(|g| format!("group {g}")),
        o.parent_id.as_ref().map(|p| format!("parent {p}")),
        o.root_id.as_ref().map(|r| format!("root {r}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join("  "))
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
        (o.priority > 0).then(|| format!("priority {}", o.priority)),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join("  "))
}

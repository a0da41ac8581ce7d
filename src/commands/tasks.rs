//! `cm tasks rate TASK 10/m|off|config` and `cm tasks rates`: operators' rate limits, kept in
//! the store for every worker on every host (`store::rates`); workers follow a change within
//! a second.

use crate::config::flow::parse_celery_rate;
use crate::config::{Config, BUILT_IN};
use crate::exit::{CmError, Code};
use crate::store::Store;

pub async fn rate(cfg: &Config, task: &str, rate: &str) -> anyhow::Result<Code> {
    // Checked before the store is opened (an SQLite file would be made): a typo changes nothing.
    if BUILT_IN.contains(&task) {
        return Err(CmError::BadArgument(format!(
            "{task}'s rate limit is set per recipe or for provisioning in fabfile.toml \
             (rate_limit in [recipes.NAME] or [provision]); cm tasks rate takes a task of [tasks]"
        ))
        .into());
    }
    if !cfg.tasks.contains_key(task) {
        let known: Vec<&str> = cfg.tasks.keys().map(String::as_str).collect();
        return Err(CmError::BadArgument(format!(
            "unknown task {task:?}: fabfile.toml's [tasks] has {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
        .into());
    }
    let configured = cfg.flow.tasks.get(task).and_then(|f| f.rate.as_ref());
    let store = Store::open(&cfg.store_url).await?;
    if rate == "config" {
        let interval = configured.map_or(0.0, |r| r.interval_ms());
        let had = store.clear_rate_override(task, interval).await?;
        let now = configured.map_or_else(
            || "no rate limit (fabfile.toml sets none)".to_string(),
            |r| format!("fabfile.toml's rate limit {}", r.text),
        );
        let was = if had {
            ""
        } else {
            " (no operator's rate was set)"
        };
        crate::outln!("task {task}: {now} on every host{was}");
        return Ok(Code::Success);
    }
    let fix = "give N/s, N/m or N/h (e.g. 10/m), off, or config";
    let parsed = if rate == "off" {
        None
    } else {
        match parse_celery_rate(rate) {
            Ok(Some(r)) => Some(r),
            Ok(None) => None,
            Err(e) => return Err(CmError::BadArgument(format!("rate {e}; or {fix}")).into()),
        }
    };
    let by = format!("cm tasks rate ({})", super::flow::whoami());
    match parsed {
        Some(r) => {
            store
                .set_rate_override(task, r.interval_ms(), &r.text, &by)
                .await?;
            crate::outln!(
                "task {task}: rate limit {} on every host, over fabfile.toml's (until `cm tasks rate {task} config`)",
                r.text
            );
        }
        None => {
            store.set_rate_override(task, 0.0, "off", &by).await?;
            crate::outln!(
                "task {task}: no rate limit on every host, whatever fabfile.toml says (until `cm tasks rate {task} config`)"
            );
        }
    }
    Ok(Code::Success)
}

pub async fn rates(cfg: &Config, json: bool) -> anyhow::Result<Code> {
    let store = Store::open(&cfg.store_url).await?;
    let rows = store.rate_overrides().await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Code::Success);
    }
    if rows.is_empty() {
        crate::outln!("no operator's rate limits: each task has fabfile.toml's rate_limit, if any");
    }
    for r in rows {
        let at = crate::output::utc_seconds(r.set_ms).unwrap_or_default();
        crate::outln!("{}\t{}\tset by {} at {at}", r.task, r.rate, r.set_by);
    }
    Ok(Code::Success)
}

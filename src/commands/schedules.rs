//! `cm schedules [--json]`, `cm schedules pause|resume|run NAME`, `cm schedules history NAME`,
//! and `cm jobs prune [--dry-run]` (retention, now).

use crate::client::schedules::{configured, overview, run_now};
use crate::config::Config;
use crate::exit::{CmError, Code};
use crate::store::{self, Prune, Store};

fn time(ms: Option<i64>) -> String {
    ms.and_then(crate::output::utc_seconds)
        .unwrap_or_else(|| "-".into())
}

/// The last 8 characters of an id, as the web shows them.
fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

pub async fn list(cfg: &Config, json: bool) -> anyhow::Result<Code> {
    let store = super::lookup::open_existing(cfg).await?;
    let views = overview(cfg, &store).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(Code::Success);
    }
    if views.is_empty() {
        crate::outln!(
            "no schedules: add a [schedules.NAME] table to {}",
            cfg.path.display()
        );
        return Ok(Code::Success);
    }
    crate::outln!(
        "{:<20} {:<36} {:<20} {:<9} {:<9} {:<20} {:<7} MISSED",
        "NAME",
        "EXPRESSION",
        "LAST SLOT",
        "JOB",
        "STATE",
        "NEXT SLOT",
        "PAUSED"
    );
    for v in &views {
        let last = v.last.as_ref();
        let state = match last {
            Some(f) if f.job_id.is_none() => "skipped".to_string(),
            Some(f) => f.state.clone().unwrap_or_else(|| "pruned".into()),
            None => "-".into(),
        };
        let next = if v.in_config {
            time(v.next_slot_ms)
        } else {
            "(not in config)".into()
        };
        crate::outln!(
            "{:<20} {:<36} {:<20} {:<9} {:<9} {:<20} {:<7} {}",
            v.name,
            v.expression.as_deref().unwrap_or("-"),
            time(last.map(|f| f.slot_ms)),
            last.and_then(|f| f.job_id.as_deref()).map_or("-", short),
            state,
            next,
            if v.paused { "yes" } else { "no" },
            v.missed
        );
    }
    Ok(Code::Success)
}

pub async fn pause(cfg: &Config, name: &str, paused: bool) -> anyhow::Result<Code> {
    let schedule = configured(cfg, name)?;
    let store = Store::open(&cfg.store_url).await?;
    store.set_paused(&schedule.name, paused).await?;
    if paused {
        crate::outln!("schedule {name} paused on every host (until `cm schedules resume {name}`)");
    } else {
        let next = schedule.next_after(store::now_ms());
        crate::outln!("schedule {name} resumed; next slot {}", time(next));
    }
    Ok(Code::Success)
}

pub async fn run(cfg: &Config, name: &str) -> anyhow::Result<Code> {
    let schedule = configured(cfg, name)?;
    let store = Store::open(&cfg.store_url).await?;
    let id = run_now(&store, schedule).await?;
    crate::outln!("{id}");
    crate::noteln!(
        "schedule {name} fired: job {id} ({}) is PENDING; a running worker publishes it within a second",
        schedule.task
    );
    Ok(Code::Success)
}

pub async fn history(cfg: &Config, name: &str, limit: i64, json: bool) -> anyhow::Result<Code> {
    let store = super::lookup::open_existing(cfg).await?;
    let firings = store.firings(name, limit).await?;
    if firings.is_empty() && !cfg.schedules.contains_key(name) {
        return Err(CmError::BadArgument(format!(
            "no schedule {name:?} in {} nor in the status store (`cm schedules` lists them)",
            cfg.path.display()
        ))
        .into());
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&firings)?);
        return Ok(Code::Success);
    }
    crate::outln!(
        "{:<20} {:<10} {:<36} {:<9} FIRED",
        "SLOT",
        "HOW",
        "JOB",
        "STATE"
    );
    for f in &firings {
        crate::outln!(
            "{:<20} {:<10} {:<36} {:<9} {}",
            time(Some(f.slot_ms)),
            f.how,
            f.job_id.as_deref().unwrap_or("-"),
            f.state.as_deref().unwrap_or("-"),
            time(Some(f.fired_ms))
        );
    }
    Ok(Code::Success)
}

pub async fn prune(cfg: &Config, dry_run: bool) -> anyhow::Result<Code> {
    let Some(retention) = cfg.retention else {
        return Err(CmError::BadArgument(format!(
            "no [retention] in {}: every job is kept; add [retention] succeeded = \"7d\", failed = \"30d\" to prune",
            cfg.path.display()
        ))
        .into());
    };
    let store = super::lookup::open_existing(cfg).await?;
    let n = store
        .prune(&Prune::of(&retention, store::now_ms(), dry_run))
        .await?;
    if dry_run {
        crate::outln!("{n} finished job(s) would be deleted (dry run: nothing deleted)");
    } else {
        crate::outln!("{n} finished job(s) deleted");
    }
    Ok(Code::Success)
}

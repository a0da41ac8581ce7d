//! Schedules as a front end shows and drives them (`cm schedules`, the web's schedules page,
//! `/api/schedules`, `/metrics`): each configured schedule with what the store has of it, and
//! the store's schedules no longer configured (their history stays); pause, resume, a run now.

use serde::Serialize;

use crate::config::Config;
use crate::exit::CmError;
use crate::schedules::{CatchUp, Overlap, Schedule};
use crate::store::{self, Fired, Firing, FiringRow, NewJob, Store};

/// One schedule, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    /// `None` for a schedule no longer in the config: it fires no more.
    pub task: Option<String>,
    pub queue: Option<String>,
    pub expression: Option<String>,
    pub catch_up: Option<CatchUp>,
    pub overlap: Option<Overlap>,
    pub in_config: bool,
    pub paused: bool,
    /// Slots passed unfired after downtime.
    pub missed: i64,
    /// The newest firing: its slot, why, its job and the job's state.
    pub last: Option<FiringRow>,
    /// When it fires next (none while paused or out of the config).
    pub next_slot_ms: Option<i64>,
}

/// Every configured schedule, in file order, then those only the store has, by name.
pub async fn overview(cfg: &Config, store: &Store) -> Result<Vec<ScheduleView>, store::StoreError> {
    let names: Vec<String> = cfg.schedules.keys().cloned().collect();
    let states = store.schedule_states(&names).await?;
    let now = store::now_ms();
    let mut out: Vec<ScheduleView> = cfg
        .schedules
        .values()
        .map(|s| {
            let state = states.iter().find(|st| st.name == s.name);
            let paused = state.is_some_and(|st| st.paused);
            let cursor = state.map_or(now, |st| st.cursor_ms);
            ScheduleView {
                name: s.name.clone(),
                task: Some(s.task.clone()),
                queue: Some(s.queue.clone()),
                expression: Some(s.expression()),
                catch_up: Some(s.catch_up),
                overlap: Some(s.overlap),
                in_config: true,
                paused,
                missed: state.map_or(0, |st| st.missed),
                last: state.and_then(|st| st.last.clone()),
                next_slot_ms: if paused {
                    None
                } else {
                    s.next_after(cursor.max(now))
                },
            }
        })
        .collect();
    for st in states
        .iter()
        .filter(|st| !cfg.schedules.contains_key(&st.name))
    {
        out.push(ScheduleView {
            name: st.name.clone(),
            task: None,
            queue: None,
            expression: None,
            catch_up: None,
            overlap: None,
            in_config: false,
            paused: st.paused,
            missed: st.missed,
            last: st.last.clone(),
            next_slot_ms: None,
        });
    }
    Ok(out)
}

/// The configured schedule `name`, or exit 64 naming those there are.
pub fn configured<'c>(cfg: &'c Config, name: &str) -> Result<&'c Schedule, CmError> {
    cfg.schedules.get(name).ok_or_else(|| {
        let known: Vec<&str> = cfg.schedules.keys().map(String::as_str).collect();
        CmError::BadArgument(format!(
            "no schedule {name:?} in {}: {}",
            cfg.path.display(),
            if known.is_empty() {
                "it has no [schedules.NAME] table".to_string()
            } else {
                format!("known are {}", known.join(", "))
            }
        ))
    })
}

/// Fires `schedule` now, outside its slots: its job is stored PENDING with a manual firing,
/// and the next sweep of any running worker publishes it (within about a second). Returns the
/// job's id.
pub async fn run_now(store: &Store, schedule: &Schedule) -> Result<String, store::StoreError> {
    let now = store::now_ms();
    let job = NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        task: schedule.task.clone(),
        queue: schedule.queue.clone(),
        args: schedule.args.clone(),
        submitted_ms: now,
        ..NewJob::default()
    };
    let id = job.id.clone();
    let firing = Firing {
        schedule: schedule.name.clone(),
        from_cursor: None,
        to_cursor: now,
        missed: 0,
        overlap_skip: false,
        slots: vec![(now, crate::schedules::How::Manual.as_str(), job)],
        // Any worker's sweep publishes it at once.
        send_until: now - 1,
    };
    match store.fire(&firing).await? {
        Fired::Jobs(jobs) if !jobs.is_empty() => Ok(id),
        other => Err(store::StoreError::Backend {
            store: store.location().to_string(),
            cause: format!(
                "a manual firing of schedule {} made no job ({other:?})",
                schedule.name
            ),
        }),
    }
}

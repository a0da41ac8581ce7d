//! Schedules in the store: each schedule's cursor (the newest slot dealt with), pause and
//! missed count, one row per name in `schedules`; and its firings, one row per slot in
//! `schedule_firings`, unique on (schedule, slot). A tick applies a [`Firing`] in one
//! transaction: the cursor moves only from the value the plan was made from (of hosts ticking
//! at once, one moves it), and each slot's firing row is written with its PENDING job, so a
//! second job for a slot cannot be. The firer then publishes the jobs; one it could not is
//! published by the next worker that sweeps (`claim_unsent`). Also retention ([`Prune`]).

use serde::Serialize;

use super::{now_ms, Backend, NewJob, Store, StoreError};

/// What one tick (or `cm schedules run`) fires for one schedule.
#[derive(Debug, Clone)]
pub struct Firing {
    pub schedule: String,
    /// The cursor the plan was made from: applied only while it is still there. `None`: a
    /// manual firing, outside the slots, which leaves the cursor alone.
    pub from_cursor: Option<i64>,
    pub to_cursor: i64,
    /// Slots that fire nothing, added to the schedule's missed count.
    pub missed: u64,
    /// `overlap = "skip"`: a slot whose previous firing's job has not ended makes no job.
    pub overlap_skip: bool,
    /// Each slot, why it fires (`How::as_str`), and the job it makes.
    pub slots: Vec<(i64, &'static str, NewJob)>,
    /// Until then the firer alone publishes the jobs; after, any worker's sweep may.
    pub send_until: i64,
}

/// What became of a [`Firing`].
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// Its cursor had moved (another host fired these slots), or the schedule is paused.
    Raced,
    /// Applied: the jobs to publish (a slot skipped by `overlap` or fired elsewhere has none).
    Jobs(Vec<NewJob>),
}

/// A schedule as the store has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleState {
    pub name: String,
    /// The newest slot dealt with (fired, missed, or passed while paused).
    pub cursor_ms: i64,
    pub paused: bool,
    /// Slots that fired nothing after downtime (by `catch_up`).
    pub missed: i64,
    /// The newest firing, if any.
    pub last: Option<FiringRow>,
}

/// One firing: a slot (or a manual run) and its job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringRow {
    pub slot_ms: i64,
    /// `on_time`, `catch_up`, `manual`, or `overlapped` (no job).
    pub how: String,
    pub job_id: Option<String>,
    pub fired_ms: i64,
    /// The job's state; `None` when there is no job, or it was pruned.
    pub state: Option<String>,
}

/// Retention: which finished jobs go. A job goes when it is final and finished before its
/// state's time, is not among the newest `keep_last` of its task, and is not the newest
/// firing of a schedule (whose `overlap` check reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// SUCCESS jobs finished before this (ms since the epoch) go; `None`: none.
    pub succeeded_before: Option<i64>,
    /// FAILURE and REVOKED jobs finished before this go; `None`: none.
    pub failed_before: Option<i64>,
    pub keep_last: u64,
    /// Jobs deleted per transaction.
    pub batch: usize,
    /// Count only.
    pub dry_run: bool,
}

impl Prune {
    /// What `[retention]` lets go at `now_ms`, in batches of [`PRUNE_BATCH`].
    pub fn of(retention: &crate::config::Retention, now_ms: i64, dry_run: bool) -> Self {
        let before = |age: Option<std::time::Duration>| {
            age.map(|a| now_ms.saturating_sub(i64::try_from(a.as_millis()).unwrap_or(i64::MAX)))
        };
        Self {
            succeeded_before: before(retention.succeeded),
            failed_before: before(retention.failed),
            keep_last: retention.keep_last,
            batch: PRUNE_BATCH,
            dry_run,
        }
    }
}

/// `overlap = "skip"` looks at the jobs of this many newest firings of the schedule (a manual
/// run's among them): a slot makes no job while one of them has not ended.
pub(super) const RUNNING_LOOKBACK: i64 = 16;

/// The most rows one prune transaction deletes.
pub const PRUNE_BATCH: usize = 1000;

impl Store {
    /// Applies `firing` in one transaction (see the module's header).
    pub async fn fire(&self, firing: &Firing) -> Result<Fired, StoreError> {
        on_backend!(self, b => b.fire(firing).await)
    }

    /// Every schedule the store has, by name, with its newest firing. A configured schedule
    /// that never ticked is added (its cursor now): its first slot is the next one.
    pub async fn schedule_states(
        &self,
        names: &[String],
    ) -> Result<Vec<ScheduleState>, StoreError> {
        let now = now_ms();
        on_backend!(self, b => b.schedule_states(names, now).await)
    }

    /// The newest `limit` firings of `schedule` (0: all), newest first.
    pub async fn firings(&self, schedule: &str, limit: i64) -> Result<Vec<FiringRow>, StoreError> {
        on_backend!(self, b => b.firings(schedule, limit).await)
    }

    /// Pauses or resumes `schedule`, for every host and across restarts. A resumed schedule
    /// goes on from now: the slots that passed while paused never fire.
    pub async fn set_paused(&self, schedule: &str, paused: bool) -> Result<(), StoreError> {
        let now = now_ms();
        on_backend!(self, b => b.set_paused(schedule, paused, now).await)
    }

    /// Records that the firings of `jobs` were published.
    pub async fn firings_sent(&self, jobs: &[String]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        on_backend!(self, b => b.firings_sent(jobs, now).await)
    }

    /// Claims, until `until_ms`, up to `limit` firings not published whose firer's claim ended
    /// by `now_ms` and whose job is still PENDING; returns those jobs, to publish. Of sweepers
    /// racing, one gets each.
    pub async fn claim_unsent(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<super::JobRow>, StoreError> {
        on_backend!(self, b => b.claim_unsent(now_ms, until_ms, limit).await)
    }

    /// Deletes (or with `dry_run` counts) the jobs `rules` let go, with their history, in
    /// transactions of at most `rules.batch` jobs; returns how many.
    pub async fn prune(&self, rules: &Prune) -> Result<u64, StoreError> {
        on_backend!(self, b => b.prune(rules).await)
    }
}

/// A fired job's PENDING history row: which schedule and slot made it.
pub(super) fn pending_row<'a>(
    schedule: &str,
    slot_ms: i64,
    how: &str,
    job: &'a NewJob,
) -> super::batch::FoldedHistory<'a> {
    super::batch::FoldedHistory {
        job_id: &job.id,
        state: super::PENDING,
        worker: "",
        at_ms: job.submitted_ms,
        detail: Some(std::borrow::Cow::Owned(format!(
            "schedule {schedule}, slot {} ({how})",
            super::rfc3339_ms(slot_ms)
        ))),
        later: None,
    }
}

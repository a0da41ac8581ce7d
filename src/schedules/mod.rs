//! Schedules (`[schedules.NAME]`): what fires when, without I/O. The slots of an expression
//! ([`slots`]) and what one tick fires of them after a cursor ([`plan`]). Below the config, which
//! builds a [`Schedule`], and the worker's tick, the CLI and the web, which read one; it imports
//! none of them. The store makes a slot fire once: see `store::firings`.

pub mod plan;
pub mod slots;

use std::time::Duration;

pub use plan::{plan, Plan};

/// One `[schedules.NAME]` table, resolved.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub task: String,
    /// The queue its jobs go to: the first that lists the task.
    pub queue: String,
    /// `[args, kwargs]` as JSON, as the store keeps a job's arguments.
    pub args: String,
    pub when: When,
    pub timezone: chrono_tz::Tz,
    pub catch_up: CatchUp,
    /// With `catch_up = "all"`: the most missed slots fired at once (the newest).
    pub max_catch_up: u32,
    pub overlap: Overlap,
}

impl Schedule {
    /// The expression as an operator wrote it: `cron 30 2 * * * (Europe/Berlin)` or `every 30s`.
    pub fn expression(&self) -> String {
        match &self.when {
            When::Cron(cron) => format!("cron {} ({})", cron.pattern, self.timezone.name()),
            When::Every(period) => format!("every {}", humantime::format_duration(*period)),
        }
    }
}

/// When a schedule's slots are.
#[derive(Debug, Clone)]
pub enum When {
    /// A cron expression, read in the schedule's time zone (boxed: it is twenty times the other).
    Cron(Box<croner::Cron>),
    /// Every period, counted from the Unix epoch (so every host agrees on the slots, whatever
    /// its start time): `every = "30s"` fires at :00 and :30 of each minute.
    Every(Duration),
}

/// After downtime (slots that passed while no worker ticked), what fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None of the missed slots; the schedule goes on from the next one.
    Skip,
    /// One run for all of them (the newest missed slot).
    Once,
    /// Each of them, the newest `max_catch_up` at most.
    All,
}

impl CatchUp {
    pub const NAMES: [&'static str; 3] = ["skip", "once", "all"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "skip" => Some(Self::Skip),
            "once" => Some(Self::Once),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// When a slot comes while the previous firing's job has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The slot is recorded as skipped and makes no job.
    Skip,
    /// The slot fires anyway.
    Allow,
}

impl Overlap {
    pub const NAMES: [&'static str; 2] = ["skip", "allow"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "skip" => Some(Self::Skip),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }
}

/// Why a firing happened, as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Its slot, by a tick within [`plan::GRACE_MS`] of it.
    OnTime,
    /// A missed slot fired after downtime (`catch_up = "once"` or `"all"`).
    CatchUp,
    /// `cm schedules run NAME` or the web's button: a firing outside the slots.
    Manual,
    /// Its slot came while the previous firing's job still ran (`overlap = "skip"`): no job.
    Overlapped,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::OnTime => "on_time",
            How::CatchUp => "catch_up",
            How::Manual => "manual",
            How::Overlapped => "overlapped",
        }
    }
}

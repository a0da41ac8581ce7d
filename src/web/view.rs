//! What the pages show, computed once in Rust so the templates stay plain: job rows, workers,
//! form choices, the state bars, the per-minute chart. `cm.js` draws the same shapes from
//! `/api/jobs` when it refreshes.

use super::data::JobsQuery;
use crate::control::WorkerStatus;
use crate::store::{EventRow, JobRow, Waiting};

/// The states in the order a job passes through them (the bars and the filter use it).
pub const STATES: &[&str] = &[
    "WAITING",
    "PENDING",
    "SCHEDULED",
    "THROTTLED",
    "RECEIVED",
    "STARTED",
    "running",
    "deploy",
    "active",
    "INITIATING",
    "PREPARING_IMAGE",
    "BOOTING",
    "AVAILABLE",
    "RETRY",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
];

/// `HH:MM:SS` (UTC) and the full RFC 3339 time for the tooltip.
pub fn clock(ms: Option<i64>) -> (String, String) {
    match ms.and_then(crate::output::utc_seconds) {
        Some(full) => (full.get(11..19).unwrap_or(&full).to_string(), full),
        None => ("-".into(), String::new()),
    }
}

/// A CSS class suffix for a state: letters and underscores only.
pub fn state_class(state: &str) -> String {
    state
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect()
}

/// A server or recipe of the launch form.
pub struct Choice {
    pub name: String,
    pub description: String,
    pub selected: bool,
}

/// The last 8 characters of a job id: a UUIDv7 begins with its time, so ids made within a
/// second share their first characters, while the end is random (and a UUIDv4's is too).
pub fn short_id(id: &str) -> String {
    let skip = id.chars().count().saturating_sub(8);
    id.chars().skip(skip).collect()
}

/// One row of the jobs table.
pub struct JobView {
    pub id: String,
    pub short_id: String,
    pub task: String,
    pub state: String,
    pub state_class: String,
    pub server: String,
    pub recipe: String,
    pub hosts: String,
    pub worker: String,
    pub submitted: (String, String),
    pub started: (String, String),
    pub finished: (String, String),
    pub error: String,
    /// Why it waits, when it has not started.
    pub waits: Option<String>,
    pub highlight: bool,
}

impl JobView {
    pub fn new(row: &JobRow, batch: &str) -> Self {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        Self {
            id: row.job.id.clone(),
            short_id: short_id(&row.job.id),
            task: row
                .job
                .task
                .strip_prefix("cm.")
                .unwrap_or(&row.job.task)
                .to_string(),
            state: row.state.clone(),
            state_class: state_class(&row.state),
            server: dash(&row.job.server),
            recipe: dash(&row.job.recipe),
            hosts: dash(&row.job.hosts),
            worker: dash(&row.worker),
            submitted: clock(row.job.submitted_ms),
            started: clock(row.started_ms),
            finished: clock(row.finished_ms),
            error: row.error.clone().unwrap_or_default(),
            waits: row.waiting_for().map(str::to_string),
            highlight: !batch.is_empty() && row.job.batch.as_deref() == Some(batch),
        }
    }
}

/// A time to the millisecond (UTC), as a job's history shows it.
pub fn at_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)))
        .map_or_else(
            || ms.to_string(),
            |t| humantime::format_rfc3339_millis(t).to_string(),
        )
}

/// A job's own page: its fields, what it gave back, its history.
pub struct JobDetail {
    pub id: String,
    pub short_id: String,
    pub task: String,
    pub queue: String,
    pub state: String,
    pub state_class: String,
    /// Not final: the page offers a revoke.
    pub open: bool,
    /// (name, value) of what it has, in a fixed order: worker, server, recipe, ...
    pub fields: Vec<(&'static str, String)>,
    pub batch: Option<String>,
    pub args: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub output: Option<String>,
    pub history: Vec<HistoryView>,
}

/// One event of a job's history.
pub struct HistoryView {
    pub state: String,
    pub state_class: String,
    pub worker: String,
    pub at: String,
    pub detail: String,
}

impl JobDetail {
    pub fn new(row: &JobRow, history: &[EventRow]) -> Self {
        let full = |ms: Option<i64>| ms.map(at_ms);
        let o = &row.job.options;
        let seconds = |ms: i64| format!("{} s", ms as f64 / 1000.0);
        let fields = [
            ("waits for", row.waiting_for().map(str::to_string)),
            ("priority", (o.priority > 0).then(|| o.priority.to_string())),
            ("worker", row.worker.clone()),
            ("server", row.job.server.clone()),
            ("recipe", row.job.recipe.clone()),
            ("kind", row.job.kind.clone()),
            ("hosts", row.job.hosts.clone()),
            ("submitted", full(row.job.submitted_ms)),
            ("started", full(row.started_ms)),
            ("finished", full(row.finished_ms)),
            ("deliveries", Some(row.deliveries.to_string())),
            ("retries", Some(row.retries.to_string())),
            (
                "lease",
                row.lease_owner.as_ref().map(|owner| match row.lease_until {
                    Some(until) => format!("{owner} until {}", at_ms(until)),
                    None => owner.clone(),
                }),
            ),
            ("eta", full(o.eta_ms)),
            ("expires", full(o.expires_ms)),
            ("time limit", o.time_limit_ms.map(seconds)),
            ("soft time limit", o.soft_time_limit_ms.map(seconds)),
            ("group", crate::store::canvas_group(o)),
            ("parent (Celery)", o.parent_id.clone()),
            ("root (Celery)", o.root_id.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
        Self {
            id: row.job.id.clone(),
            short_id: short_id(&row.job.id),
            task: row.job.task.clone(),
            queue: row.job.queue.clone(),
            state: row.state.clone(),
            state_class: state_class(&row.state),
            open: !crate::store::is_final(&row.state),
            fields,
            batch: row.job.batch.clone(),
            args: row.job.args.clone(),
            result: row.result.clone(),
            error: row.error.clone(),
            output: row.output.clone().filter(|o| !o.is_empty()),
            history: history
                .iter()
                .map(|e| HistoryView {
                    state: e.state.clone(),
                    state_class: state_class(&e.state),
                    worker: e
                        .worker
                        .clone()
                        .filter(|w| !w.is_empty())
                        .unwrap_or_else(|| "-".into()),
                    at: at_ms(e.at_ms),
                    detail: e.detail.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// One row of the workers table.
pub struct WorkerView {
    pub name: String,
    pub queue: String,
    pub state: String,
    pub state_class: String,
    pub pid: String,
    pub uptime: String,
    pub memory: String,
    pub done: String,
}

impl WorkerView {
    pub fn new(w: &WorkerStatus) -> Self {
        Self {
            name: w.name.clone(),
            queue: w.queue.clone(),
            state: w.state.to_string(),
            state_class: w.state.replace(' ', "_"),
            pid: w.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            uptime: duration(w.uptime_seconds),
            memory: bytes(w.memory_bytes),
            done: w.jobs_done.map_or_else(|| "-".into(), |n| n.to_string()),
        }
    }
}

/// One row of the state bar chart.
pub struct StateBar {
    pub state: String,
    pub state_class: String,
    pub count: i64,
    pub width: f64,
    pub y: i64,
    pub link: String,
}

pub const BAR_ROW: i64 = 18;
pub const BAR_MAX_WIDTH: f64 = 150.0;

/// Bars in lifecycle order for the states that have jobs (unknown states last).
pub fn state_bars(counts: &[(String, i64)], query: &JobsQuery) -> Vec<StateBar> {
    let mut ordered: Vec<&(String, i64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    ordered.sort_by_key(|(s, _)| STATES.iter().position(|k| k == s).unwrap_or(STATES.len()));
    let max = ordered.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    ordered
        .iter()
        .zip(0..)
        .map(|((state, count), i)| StateBar {
            state: state.clone(),
            state_class: state_class(state),
            count: *count,
            width: tenths((BAR_MAX_WIDTH * *count as f64 / max as f64).max(1.0)),
            y: i * BAR_ROW,
            link: query.link(1, Some(state)),
        })
        .collect()
}

/// One column of the finished-per-minute chart.
pub struct MinuteBar {
    pub x: i64,
    pub y: f64,
    pub height: f64,
    pub count: i64,
    pub minutes_ago: usize,
}

pub const CHART_HEIGHT: f64 = 48.0;
pub const CHART_COLUMN: i64 = 8;

pub fn minute_bars(per_minute: &[i64]) -> Vec<MinuteBar> {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let n = per_minute.len();
    per_minute
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let height = if count > 0 {
                tenths((CHART_HEIGHT * count as f64 / max as f64).max(1.0))
            } else {
                0.0
            };
            MinuteBar {
                x: i as i64 * CHART_COLUMN,
                y: tenths(CHART_HEIGHT - height),
                height,
                count,
                minutes_ago: n - 1 - i,
            }
        })
        .collect()
}

fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn bytes(n: Option<u64>) -> String {
    match n {
        None => "-".into(),
        Some(n) if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        Some(n) => format!("{} KiB", n >> 10),
    }
}

pub fn duration(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        Some(s) if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        Some(s) if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        Some(s) => format!("{s}s"),
    }
}

/// A WAITING job on db_stats: what it is, and what it waits for.
pub struct WaitingView {
    pub id: String,
    pub short_id: String,
    pub task: String,
    pub hosts: String,
    pub parents: i64,
    /// (state, its class, parents in it).
    pub by_state: Vec<(String, String, i64)>,
    /// The first parents named, those not final first.
    pub first: Vec<ParentView>,
    /// Parents not named.
    pub more: i64,
}

/// A parent of a waiting job.
pub struct ParentView {
    pub id: String,
    pub short_id: String,
    pub task: String,
    pub state: String,
    pub state_class: String,
    /// An `--after-any` edge: any end releases.
    pub any_end: bool,
}

impl WaitingView {
    pub fn new(w: &Waiting) -> Self {
        let task = |t: &str| t.strip_prefix("cm.").unwrap_or(t).to_string();
        Self {
            id: w.job.id.clone(),
            short_id: short_id(&w.job.id),
            task: task(&w.job.task),
            hosts: w.hosts.clone().unwrap_or_else(|| "-".into()),
            parents: w.parents,
            by_state: (w.by_state.iter())
                .map(|(s, n)| (s.clone(), state_class(s), *n))
                .collect(),
            first: (w.first.iter())
                .map(|p| ParentView {
                    id: p.job.id.clone(),
                    short_id: short_id(&p.job.id),
                    task: task(&p.job.task),
                    state: p.job.state.clone(),
                    state_class: state_class(&p.job.state),
                    any_end: p.mode == crate::store::workflow::AFTER_ANY,
                })
                .collect(),
            more: w.parents - w.first.len() as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_the_lifecycle() {
        let counts = vec![("SUCCESS".to_string(), 10), ("PENDING".to_string(), 5)];
        let bars = state_bars(&counts, &JobsQuery::default());
        assert_eq!(bars[0].state, "PENDING");
        assert_eq!(bars[1].width, BAR_MAX_WIDTH);
        assert_eq!(clock(Some(0)).0, "00:00:00");
    }

    #[test]
    fn short_ids_of_jobs_made_in_one_moment_differ() {
        let ids: Vec<String> = (0..50).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let short: std::collections::HashSet<String> = ids.iter().map(|i| short_id(i)).collect();
        assert_eq!(short.len(), ids.len(), "{short:?}");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("0123456789"), "23456789");
    }
}

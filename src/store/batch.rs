//! What one commit of a worker's events writes, decided without SQL: each backend renders a
//! [`Commit`] in its own statements.
//!
//! A commit takes as few row writes as give the same end state as applying its events one by
//! one (property-tested below): a job whose whole run is in the commit gets one upsert
//! ([`WholeRun`]); other events apply in order, skipping a plain step that a later event of the
//! same job overwrites; and the history is folded ([`FoldedHistory`]).
//!
//! The maps here are keyed by job ids, several lookups per event: they hash with FxHash, not
//! std's SipHash. A commit holds at most a few thousand events of the worker's own queue, so
//! hash flooding has nothing to gain.

use std::borrow::Cow;

use rustc_hash::FxHashMap as HashMap;

use super::{
    rfc3339_ms, Event, EventRow, NewJob, Spawned, StoreError, LEASED, PENDING, RECEIVED,
    REDELIVERED, REQUEUED, RETRY, STARTED,
};

/// Everything one commit writes, in this order: `updates`, `whole_runs`, `options`, `spawns`,
/// `history`. No job is in both `updates` and `whole_runs`.
#[derive(Debug, Default)]
pub(super) struct Commit<'a> {
    /// Events to apply one by one to their job's `jobs` row, in the order sent.
    pub updates: Vec<&'a Event>,
    /// Jobs whose whole run is in the commit, in order of their RECEIVED.
    pub whole_runs: Vec<WholeRun<'a>>,
    /// Received jobs whose message has options to keep (none for a plain job): written where
    /// the row has none yet (the first record of a message wins).
    pub options: Vec<&'a NewJob>,
    /// What the final states of the commit start or end with them (Celery's canvas).
    pub spawns: Vec<Spawn<'a>>,
    pub history: Vec<FoldedHistory<'a>>,
}

/// A job that the final state `state` of `parent`, written by `worker` at `at`, starts or ends
/// with it: written only if the parent's row holds that very end after the commit's updates.
#[derive(Debug)]
pub(super) struct Spawn<'a> {
    pub parent: &'a str,
    pub state: &'a str,
    pub worker: &'a str,
    pub at: i64,
    pub spawned: &'a Spawned,
}

impl Commit<'_> {
    /// Whether it writes more than runs and history (the statements PostgreSQL's fast path
    /// sends without a transaction).
    pub fn beyond_runs(&self) -> bool {
        !(self.updates.is_empty() && self.options.is_empty() && self.spawns.is_empty())
    }
}

/// A job whose whole run is in one commit: RECEIVED, STARTED, its steps and its final state.
/// Applied in order, those events leave exactly this row, so one upsert writes it: inserted
/// with `deliveries` 1, or, over an existing row (PENDING, or an earlier delivery), these
/// columns set (the lease cleared) and `deliveries` counted up; a final row (another run's)
/// is left as it is.
#[derive(Debug)]
pub(super) struct WholeRun<'a> {
    pub job: &'a NewJob,
    pub worker: &'a str,
    /// When the RECEIVED happened: a new row's `submitted_ms`, as a lone RECEIVED would set it.
    pub received_ms: i64,
    pub state: &'a str,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub output: Option<&'a str>,
}

/// The decision that keeps history cheap: **a commit adds at most one `job_events` row per job
/// and worker**. The row holds that job's first event of the commit in its columns; the events
/// after it go in its `later` column as JSON `[[state, at_ms, detail], ...]` (NULL when none).
/// A job that runs whole within one commit thus adds one history row, not six; readers
/// [`unfold`] the rows back into events. (A worker's commits hold its own events only, so in
/// practice this is one row per job per commit.)
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FoldedHistory<'a> {
    pub job_id: &'a str,
    pub state: &'a str,
    pub worker: &'a str,
    pub at_ms: i64,
    pub detail: Option<Cow<'a, str>>,
    pub later: Option<String>,
}

/// One entry of a history row's `later` JSON: state, at_ms, detail.
type LaterStep<'a> = (Cow<'a, str>, i64, Option<Cow<'a, str>>);

/// What one commit of `events` (in the order sent) writes.
pub(super) fn plan<'a>(events: &[&'a Event]) -> Commit<'a> {
    let (whole_runs, in_runs) = whole_runs(events);
    let mut last_setter: HashMap<&str, usize> =
        HashMap::with_capacity_and_hasher(events.len(), Default::default());
    for (i, ev) in events.iter().enumerate() {
        if sets_state(ev) {
            last_setter.insert(event_id(ev), i);
        }
    }
    let updates = events
        .iter()
        .enumerate()
        .filter(|(i, ev)| {
            let id = event_id(ev);
            let overwritten = matches!(ev, Event::State { state, .. } if state != STARTED)
                && last_setter.get(id).is_some_and(|last| last > i);
            !in_runs.contains_key(id) && !overwritten
        })
        .map(|(_, ev)| *ev)
        .collect();
    let options = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Received { job, .. } if !job.options.is_plain() => Some(job),
            _ => None,
        })
        .collect();
    let spawns = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Finished {
                id,
                state,
                worker,
                at,
                spawned,
                ..
            } => Some(spawned.iter().map(|spawned| Spawn {
                parent: id,
                state,
                worker,
                at: *at,
                spawned,
            })),
            _ => None,
        })
        .flatten()
        .collect();
    Commit {
        updates,
        whole_runs,
        options,
        spawns,
        history: folded_history(events),
    }
}

/// The `PENDING` history rows of jobs being published (nobody's, at their submission).
pub(super) fn published(jobs: &[NewJob]) -> Vec<FoldedHistory<'_>> {
    jobs.iter()
        .map(|job| FoldedHistory {
            job_id: &job.id,
            state: PENDING,
            worker: "",
            at_ms: job.submitted_ms,
            detail: None,
            later: None,
        })
        .collect()
}

/// A stored history row back as the events it holds, oldest first, appended to `out`.
pub(super) fn unfold(
    id: &str,
    first: EventRow,
    later: Option<&str>,
    out: &mut Vec<EventRow>,
) -> Result<(), StoreError> {
    let steps: Vec<LaterStep<'_>> = match later {
        Some(json) => serde_json::from_str(json).map_err(|e| StoreError::BadHistory {
            id: id.to_string(),
            cause: e.to_string(),
        })?,
        None => Vec::new(),
    };
    let worker = first.worker.clone();
    out.push(first);
    out.extend(steps.into_iter().map(|(state, at_ms, detail)| EventRow {
        state: state.into_owned(),
        worker: worker.clone(),
        at_ms,
        detail: detail.map(Cow::into_owned),
    }));
    Ok(())
}

/// The `job_events` row an event adds on its own: (job id, state, worker, at, detail).
pub(super) fn history_of(ev: &Event) -> (&str, &str, &str, i64, Option<Cow<'_, str>>) {
    match ev {
        Event::Received { job, worker, at } => (&job.id, RECEIVED, worker, *at, None),
        Event::State {
            id,
            state,
            worker,
            at,
        } => (id, state, worker, *at, None),
        Event::Finished {
            id,
            state,
            worker,
            at,
            error,
            ..
        } => (id, state, worker, *at, error.as_deref().map(Cow::Borrowed)),
        Event::Retry {
            id,
            worker,
            at,
            error,
            ..
        } => (id, RETRY, worker, *at, Some(Cow::Borrowed(error))),
        Event::Redelivered {
            id,
            state,
            worker,
            at,
        } => (
            id,
            REDELIVERED,
            worker,
            *at,
            Some(Cow::Owned(format!(
                "redelivered; already {state}, acked without running again"
            ))),
        ),
        Event::GivenBack {
            id,
            worker,
            at,
            why,
        } => (
            id,
            REQUEUED,
            worker,
            *at,
            Some(Cow::Owned(given_back(worker, why))),
        ),
        Event::Leased {
            id,
            worker,
            at,
            until,
        } => (
            id,
            LEASED,
            worker,
            *at,
            Some(Cow::Owned(format!(
                "acked; lease until {}",
                rfc3339_ms(*until)
            ))),
        ),
    }
}

/// The detail of a give-back's REQUEUED history row.
pub(super) fn given_back(worker: &str, why: &str) -> String {
    format!("given back by {worker}: {why}; its message went back to the queue")
}

/// Whether an event sets the job's `state` column (all but a redelivery note and a lease).
fn sets_state(ev: &Event) -> bool {
    !matches!(ev, Event::Redelivered { .. } | Event::Leased { .. })
}

pub(super) fn event_id(ev: &Event) -> &str {
    match ev {
        Event::Received { job, .. } => &job.id,
        Event::State { id, .. }
        | Event::Finished { id, .. }
        | Event::Retry { id, .. }
        | Event::Redelivered { id, .. }
        | Event::GivenBack { id, .. }
        | Event::Leased { id, .. } => id,
    }
}

/// The history of `events`, folded (see [`FoldedHistory`]): groups by job and worker, in order
/// of each group's first event.
fn folded_history<'a>(events: &[&'a Event]) -> Vec<FoldedHistory<'a>> {
    let mut groups: Vec<(&'a Event, Vec<&'a Event>)> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> =
        HashMap::with_capacity_and_hasher(events.len(), Default::default());
    for &ev in events {
        let (id, _, worker, _, _) = history_of(ev);
        match index.get(&(id, worker)) {
            Some(&i) => groups[i].1.push(ev),
            None => {
                index.insert((id, worker), groups.len());
                groups.push((ev, Vec::new()));
            }
        }
    }
    groups
        .into_iter()
        .map(|(first, later)| {
            let (job_id, state, worker, at_ms, detail) = history_of(first);
            FoldedHistory {
                job_id,
                state,
                worker,
                at_ms,
                detail,
                later: later_json(&later),
            }
        })
        .collect()
}

/// The `later` column of a history row: `None` when nothing followed its event.
fn later_json(later: &[&Event]) -> Option<String> {
    if later.is_empty() {
        return None;
    }
    let steps: Vec<LaterStep<'_>> = later
        .iter()
        .map(|ev| {
            let (_, state, _, at, detail) = history_of(ev);
            (Cow::Borrowed(state), at, detail)
        })
        .collect();
    // Strings, integers and options only: serialising them cannot fail.
    serde_json::to_string(&steps).ok()
}

/// The jobs of `events` whose whole run is in the commit (and nothing else of theirs is), in
/// order of their RECEIVED, and their index in that list by job id.
fn whole_runs<'a>(events: &[&'a Event]) -> (Vec<WholeRun<'a>>, HashMap<&'a str, usize>) {
    let mut by_job: HashMap<&str, Vec<&Event>> = HashMap::default();
    let mut order: Vec<&str> = Vec::new();
    for ev in events {
        let id = event_id(ev);
        by_job
            .entry(id)
            .or_insert_with(|| {
                order.push(id);
                Vec::new()
            })
            .push(ev);
    }
    let mut runs = Vec::new();
    let mut index = HashMap::default();
    for id in order {
        let Some(run) = by_job.get(id).and_then(|evs| whole_run(evs)) else {
            continue;
        };
        index.insert(id, runs.len());
        runs.push(run);
    }
    (runs, index)
}

/// `evs` (one job's events of a commit) as one whole run, if that is what they are.
fn whole_run<'a>(evs: &[&'a Event]) -> Option<WholeRun<'a>> {
    let (
        Some(Event::Received {
            job,
            worker,
            at: received_ms,
        }),
        Some(Event::State {
            state: started,
            at: started_ms,
            ..
        }),
        Some(Event::Finished {
            state,
            at: finished_ms,
            result,
            error,
            output,
            ..
        }),
    ) = (
        evs.first().copied(),
        evs.get(1).copied(),
        evs.last().copied(),
    )
    else {
        return None;
    };
    let steps_only = evs
        .get(2..evs.len() - 1)?
        .iter()
        .all(|e| matches!(e, Event::State { state, .. } if state != STARTED));
    (*started == STARTED && steps_only).then_some(WholeRun {
        job,
        worker,
        received_ms: *received_ms,
        state,
        started_ms: *started_ms,
        finished_ms: *finished_ms,
        result: result.as_deref(),
        error: error.as_deref(),
        output: output.as_deref(),
    })
}

/// Splits `rows` into statements of sizes that recur: `max` rows while that many are left, then
/// the largest power of two that fits. `max` is a power of two, so a commit of any size takes at
/// most log2(`max`) + 1 statement texts, and a connection's statement cache keeps them all
/// prepared (one statement for exactly the rows at hand had a new text, parsed again, for
/// nearly every batch size).
pub(super) fn chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests;

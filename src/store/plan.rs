//! What a batch of worker events writes: the statements and their arguments, built once and run
//! by whichever connection the writer holds (rusqlite for an SQLite file, sqlx otherwise).
//!
//! The batch takes as few statements as give the same end state as applying its events one by
//! one: a job whose whole run is in the batch gets one row in a multi-row upsert; other events
//! apply in order, skipping a plain step that a later event of the same job overwrites; history
//! rows go in multi-row inserts.
//!
//! The maps here are keyed by job ids, several lookups per event: they hash with FxHash, not
//! std's SipHash, which was a twentieth of a worker's instructions (callgrind). A batch holds at
//! most a few thousand events of the worker's own queue, so hash flooding has nothing to gain.
//!
//! Placeholders are `$N`, numbered in the order they appear in the text (or `?` in the
//! multi-row statements, see [`Params`]). PostgreSQL reads `$N` by number; SQLite reads `$N` as a
//! name and numbers names by first appearance, so the two agree only in that order.

use std::borrow::Cow;

use rustc_hash::FxHashMap as HashMap;

use super::params::{self, Params};
use super::{Event, NewJob, RECEIVED, REDELIVERED, RETRY, STARTED};

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    /// SQL NULL (only ever in a text column).
    Null,
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a super::Shared> for Arg<'a> {
    fn from(s: &'a super::Shared) -> Self {
        Arg::Text(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(s: &'a Option<String>) -> Self {
        s.as_deref().map_or(Arg::Null, Arg::from)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

/// One statement of a batch.
#[derive(Debug)]
pub(super) struct Statement<'a> {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    fn fixed(sql: &'static str, args: Vec<Arg<'a>>) -> Self {
        Self {
            sql: Cow::Borrowed(sql),
            args,
        }
    }
}

/// The statements that write `events`, in order, for a connection to SQLite (`sqlite`) or
/// PostgreSQL. They belong in one transaction.
pub(super) fn batch<'a>(events: &[&'a Event], sqlite: bool) -> Vec<Statement<'a>> {
    let runs = whole_runs(events);
    let mut last_setter: HashMap<&str, usize> = HashMap::default();
    for (i, ev) in events.iter().enumerate() {
        if sets_state(ev) {
            last_setter.insert(event_id(ev), i);
        }
    }
    let mut out = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let id = event_id(ev);
        if runs.contains_key(id) {
            continue;
        }
        let overwritten = matches!(ev, Event::State { state, .. } if *state != STARTED)
            && last_setter.get(id).is_some_and(|last| *last > i);
        if !overwritten {
            out.push(row(ev));
        }
    }
    let whole: Vec<&WholeRun<'_>> = runs.values().collect();
    upsert_whole_runs(&whole, sqlite, &mut out);
    history(events, sqlite, &mut out);
    out
}

/// The `jobs` columns of a new job, in the order every INSERT here names them first:
/// id, task, queue, args, server, recipe, kind, hosts.
pub(super) fn job_args<'a>(job: &'a NewJob, out: &mut Vec<Arg<'a>>) {
    out.extend([
        Arg::from(&job.id),
        Arg::from(&job.task),
        Arg::from(&job.queue),
        Arg::from(&job.args),
        Arg::from(&job.server),
        Arg::from(&job.recipe),
        Arg::from(&job.kind),
        Arg::from(&job.hosts),
    ]);
}

/// The statement that applies one event to its `jobs` row (history is separate).
fn row<'a>(ev: &'a Event) -> Statement<'a> {
    match ev {
        Event::Received { job, worker, at } => {
            let mut args = Vec::with_capacity(10);
            job_args(job, &mut args);
            args.extend([Arg::from(worker), Arg::from(*at)]);
            Statement::fixed(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, worker, submitted_ms, deliveries) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'RECEIVED', $9, $10, 1) \
                 ON CONFLICT (id) DO UPDATE SET state = 'RECEIVED', worker = excluded.worker, \
                 deliveries = jobs.deliveries + 1",
                args,
            )
        }
        Event::State {
            id,
            state,
            worker,
            at,
        } if *state == STARTED => Statement::fixed(
            "UPDATE jobs SET state = $1, worker = $2, started_ms = $3 WHERE id = $4",
            vec![(*state).into(), worker.into(), (*at).into(), id.into()],
        ),
        Event::State { id, state, .. } => Statement::fixed(
            "UPDATE jobs SET state = $1 WHERE id = $2",
            vec![(*state).into(), id.into()],
        ),
        Event::Finished {
            id,
            state,
            worker,
            at,
            result,
            error,
        } => Statement::fixed(
            "UPDATE jobs SET state = $1, worker = $2, finished_ms = $3, result = $4, error = $5 WHERE id = $6",
            vec![
                (*state).into(),
                worker.into(),
                (*at).into(),
                result.into(),
                error.into(),
                id.into(),
            ],
        ),
        Event::Retry {
            id, error, retries, ..
        } => Statement::fixed(
            "UPDATE jobs SET state = 'RETRY', error = $1, retries = $2 WHERE id = $3",
            vec![error.into(), (*retries).into(), id.into()],
        ),
        Event::Redelivered { id, .. } => Statement::fixed(
            "UPDATE jobs SET deliveries = deliveries + 1 WHERE id = $1",
            vec![id.into()],
        ),
    }
}

/// The `job_events` row an event adds: (job id, state, worker, at, detail).
fn history_of(ev: &Event) -> (&str, &str, &str, i64, Option<Cow<'_, str>>) {
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
    }
}

/// Whether an event sets the job's `state` column (all but a redelivery note).
fn sets_state(ev: &Event) -> bool {
    !matches!(ev, Event::Redelivered { .. })
}

fn event_id(ev: &Event) -> &str {
    match ev {
        Event::Received { job, .. } => &job.id,
        Event::State { id, .. }
        | Event::Finished { id, .. }
        | Event::Retry { id, .. }
        | Event::Redelivered { id, .. } => id,
    }
}

/// History rows per INSERT (a power of two, see [`params::chunks`]): 6 parameters each, well
/// under SQLite's and PostgreSQL's limits.
const HISTORY_ROWS_PER_INSERT: usize = 256;

/// The history of `events` as multi-row inserts: one row per job and worker in the batch. The
/// row holds that job's first event of the batch; the ones after it go in its `later` column, as
/// JSON `[[state, at_ms, detail], ...]` ([`Store::history`](super::Store::history) unfolds them).
/// A job that runs whole within one commit thus adds one history row, not six: a worker's SQLite
/// instructions per job fell by two fifths (callgrind).
pub(super) fn history<'a>(events: &[&'a Event], sqlite: bool, out: &mut Vec<Statement<'a>>) {
    let head = "INSERT INTO job_events (job_id, state, worker, at_ms, detail, later) VALUES ";
    multi_row(
        &folded(events),
        HISTORY_ROWS_PER_INSERT,
        sqlite,
        (head, ""),
        out,
        |(first, later), p, args| {
            let (id, state, worker, at, detail) = history_of(first);
            args.extend([
                Arg::from(id),
                Arg::from(state),
                Arg::from(worker),
                Arg::from(at),
                detail.map_or(Arg::Null, Arg::Text),
                later_json(later).map_or(Arg::Null, |json| Arg::Text(Cow::Owned(json))),
            ]);
            p.list(6)
        },
    );
}

/// `events` grouped by job and worker, in order of each group's first event; each group is its
/// first event and the ones after it.
fn folded<'e, 'a>(events: &'e [&'a Event]) -> Vec<(&'a Event, Vec<&'a Event>)> {
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
}

/// The `later` column of a history row: `None` when nothing followed its event.
fn later_json(later: &[&Event]) -> Option<String> {
    if later.is_empty() {
        return None;
    }
    let steps: Vec<_> = later
        .iter()
        .map(|ev| {
            let (_, state, _, at, detail) = history_of(ev);
            (state, at, detail)
        })
        .collect();
    // Strings, integers and options only: serialising them cannot fail.
    serde_json::to_string(&steps).ok()
}

/// New jobs per INSERT (a power of two, see [`params::chunks`]): 10 parameters each.
const PENDING_ROWS_PER_INSERT: usize = 128;

/// The `jobs` rows of published jobs, PENDING (a row already there is left alone).
pub(super) fn pending<'a>(jobs: &'a [NewJob], sqlite: bool, out: &mut Vec<Statement<'a>>) {
    let head =
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, \
                submitted_ms) VALUES ";
    let tail = " ON CONFLICT (id) DO NOTHING";
    multi_row(
        jobs,
        PENDING_ROWS_PER_INSERT,
        sqlite,
        (head, tail),
        out,
        |job, p, args| {
            job_args(job, args);
            args.extend([Arg::from(&job.batch), Arg::from(job.submitted_ms)]);
            let (columns, submitted) = (p.list(9), p.list(1));
            format!("{columns}, 'PENDING', {submitted}")
        },
    );
}

/// Adds one statement per chunk of `rows` (at most `max` rows, see [`params::chunks`]):
/// `head`, then `(...)` per row, then `tail`. `row` adds a row's arguments and returns its
/// placeholders.
fn multi_row<'r, 'a, T>(
    rows: &'r [T],
    max: usize,
    sqlite: bool,
    (head, tail): (&str, &str),
    out: &mut Vec<Statement<'a>>,
    mut row: impl FnMut(&'r T, &mut Params, &mut Vec<Arg<'a>>) -> String,
) {
    for chunk in params::chunks(rows, max) {
        let mut sql = String::from(head);
        let mut p = Params::new(sqlite);
        let mut args = Vec::new();
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&row(r, &mut p, &mut args));
            sql.push(')');
        }
        sql.push_str(tail);
        out.push(Statement {
            sql: Cow::Owned(sql),
            args,
        });
    }
}

/// A job whose whole run is in one batch: RECEIVED, STARTED, its steps and its final state.
/// Applied in order, those events leave exactly this row, so one upsert writes it.
struct WholeRun<'a> {
    job: &'a NewJob,
    worker: &'a str,
    state: &'a str,
    started_ms: i64,
    finished_ms: i64,
    result: &'a Option<String>,
    error: &'a Option<String>,
}

/// The jobs of `events` whose whole run is in the batch (and nothing else of theirs is),
/// keyed by job id.
fn whole_runs<'a>(events: &[&'a Event]) -> HashMap<&'a str, WholeRun<'a>> {
    let mut by_job: HashMap<&str, Vec<&Event>> = HashMap::default();
    for ev in events {
        by_job.entry(event_id(ev)).or_default().push(ev);
    }
    let mut runs = HashMap::default();
    for (id, evs) in by_job {
        let (
            Some(Event::Received { job, worker, .. }),
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
                ..
            }),
        ) = (
            evs.first().copied(),
            evs.get(1).copied(),
            evs.last().copied(),
        )
        else {
            continue;
        };
        let steps_only = evs[2..evs.len() - 1]
            .iter()
            .all(|e| matches!(e, Event::State { state, .. } if *state != STARTED));
        if *started == STARTED && steps_only {
            runs.insert(
                id,
                WholeRun {
                    job,
                    worker,
                    state,
                    started_ms: *started_ms,
                    finished_ms: *finished_ms,
                    result,
                    error,
                },
            );
        }
    }
    runs
}

/// Whole runs per upsert (a power of two, see [`params::chunks`]): 15 parameters each.
const RUNS_PER_UPSERT: usize = 64;

fn upsert_whole_runs<'a>(runs: &[&WholeRun<'a>], sqlite: bool, out: &mut Vec<Statement<'a>>) {
    let head =
        "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, state, worker, \
                submitted_ms, started_ms, finished_ms, result, error, deliveries) VALUES ";
    let tail = " ON CONFLICT (id) DO UPDATE SET state = excluded.state, worker = excluded.worker, \
                started_ms = excluded.started_ms, finished_ms = excluded.finished_ms, \
                result = excluded.result, error = excluded.error, deliveries = jobs.deliveries + 1";
    multi_row(
        runs,
        RUNS_PER_UPSERT,
        sqlite,
        (head, tail),
        out,
        |r, p, args| {
            job_args(r.job, args);
            args.extend([
                Arg::from(r.state),
                Arg::from(r.worker),
                Arg::from(r.job.submitted_ms),
                Arg::from(r.started_ms),
                Arg::from(r.finished_ms),
                Arg::from(r.result),
                Arg::from(r.error),
            ]);
            format!("{}, 1", p.list(15))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$N` placeholders must appear in the text as $1, $2, ... in that order (see the module
    /// comment), and one argument each.
    fn numbered_in_order(st: &Statement<'_>) -> bool {
        let mut next = 1;
        let mut rest = st.sql.as_ref();
        while let Some(at) = rest.find('$') {
            let digits: String = rest[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.parse::<usize>().ok() != Some(next) {
                return false;
            }
            next += 1;
            rest = &rest[at + 1 + digits.len()..];
        }
        next - 1 == st.args.len()
    }

    #[test]
    fn every_single_row_statement_numbers_its_placeholders_in_order() {
        let job = NewJob {
            id: "a".into(),
            ..NewJob::default()
        };
        let (w, e) = (super::super::Shared::from("w"), Some("boom".to_string()));
        let events = [
            Event::Received {
                job,
                worker: w.clone(),
                at: 1,
            },
            Event::State {
                id: "a".into(),
                state: STARTED,
                worker: w.clone(),
                at: 2,
            },
            Event::State {
                id: "a".into(),
                state: "deploy",
                worker: w.clone(),
                at: 3,
            },
            Event::Finished {
                id: "a".into(),
                state: super::super::FAILURE,
                worker: w.clone(),
                at: 4,
                result: None,
                error: e,
            },
            Event::Retry {
                id: "a".into(),
                worker: w.clone(),
                at: 5,
                error: "x".into(),
                retries: 1,
            },
            Event::Redelivered {
                id: "a".into(),
                state: "SUCCESS".into(),
                worker: w,
                at: 6,
            },
        ];
        for ev in &events {
            let st = row(ev);
            assert!(numbered_in_order(&st), "{}", st.sql);
        }
        // PostgreSQL's multi-row statements number on too.
        let all: Vec<&Event> = events.iter().collect();
        let mut statements = batch(&all, false);
        let published = [NewJob::default(), NewJob::default()];
        pending(&published, false, &mut statements);
        for st in statements {
            assert!(numbered_in_order(&st), "{}", st.sql);
        }
    }

    /// A batch's events fold into one history row per job and worker, first event first; the
    /// rest keep their state, time and detail, in order, in `later`.
    #[test]
    fn history_folds_each_jobs_events_into_one_row() {
        let (w1, w2) = (
            super::super::Shared::from("w1"),
            super::super::Shared::from("w2"),
        );
        let state =
            |id: &str, state: &'static str, worker: &super::super::Shared, at| Event::State {
                id: id.into(),
                state,
                worker: worker.clone(),
                at,
            };
        let events = [
            state("a", STARTED, &w1, 1),
            state("b", STARTED, &w1, 2),
            Event::Finished {
                id: "a".into(),
                state: super::super::FAILURE,
                worker: w1.clone(),
                at: 3,
                result: None,
                error: Some("boom \"x\"".into()),
            },
            state("b", "deploy", &w1, 4),
            state("a", STARTED, &w2, 5),
        ];
        let all: Vec<&Event> = events.iter().collect();
        let mut out = Vec::new();
        history(&all, true, &mut out);
        // Three rows go as a statement of two and one of one (see `params::chunks`).
        let args: Vec<Arg<'_>> = out.into_iter().flat_map(|st| st.args).collect();
        let text = |s: &str| Arg::Text(Cow::Owned(s.to_string()));
        let rows: Vec<&[Arg<'_>]> = args.chunks(6).collect();
        assert_eq!(
            rows,
            [
                &[
                    text("a"),
                    text(STARTED),
                    text("w1"),
                    Arg::Int(1),
                    Arg::Null,
                    text(r#"[["FAILURE",3,"boom \"x\""]]"#)
                ][..],
                &[
                    text("b"),
                    text(STARTED),
                    text("w1"),
                    Arg::Int(2),
                    Arg::Null,
                    text(r#"[["deploy",4,null]]"#)
                ][..],
                &[
                    text("a"),
                    text(STARTED),
                    text("w2"),
                    Arg::Int(5),
                    Arg::Null,
                    Arg::Null
                ][..],
            ]
        );
    }
}

//! The batching property against a small in-memory model of the `jobs` and `job_events` rows
//! (the real databases are checked in each backend's tests).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::store::testing::{traffic, Traffic};
use crate::store::{JobRow, Shared, FAILURE, SUCCESS};

/// What the SQL of each row write does, on plain maps.
#[derive(Debug, Default, PartialEq)]
struct Model {
    jobs: BTreeMap<String, JobRow>,
    /// Each job's history rows as stored: (its events unfolded, how many rows).
    history: BTreeMap<String, (Vec<EventRow>, usize)>,
}

impl Model {
    fn insert_pending(&mut self, jobs: &[NewJob]) {
        for job in jobs {
            self.jobs.entry(job.id.clone()).or_insert_with(|| JobRow {
                batch: job.batch.clone(),
                submitted_ms: Some(job.submitted_ms),
                ..new_row(job, PENDING, None, 0)
            });
        }
        self.add_history(&published(jobs));
    }

    /// One event in a commit of its own, as a worker with nothing to group would write it.
    fn apply_alone(&mut self, ev: &Event) {
        self.update(ev);
        let (job_id, state, worker, at_ms, detail) = history_of(ev);
        self.add_history(&[FoldedHistory {
            job_id,
            state,
            worker,
            at_ms,
            detail,
            later: None,
        }]);
    }

    fn apply(&mut self, commit: &Commit<'_>) {
        for ev in &commit.updates {
            self.update(ev);
        }
        for run in &commit.whole_runs {
            self.upsert(run);
        }
        self.add_history(&commit.history);
    }

    fn update(&mut self, ev: &Event) {
        let id = event_id(ev);
        if let Event::Received { job, worker, at } = ev {
            let row = self.jobs.entry(id.to_string()).or_insert_with(|| JobRow {
                submitted_ms: Some(*at),
                ..new_row(job, RECEIVED, Some(worker), 0)
            });
            row.state = RECEIVED.into();
            row.worker = Some(worker.to_string());
            row.deliveries += 1;
            return;
        }
        let Some(row) = self.jobs.get_mut(id) else {
            return;
        };
        match ev {
            Event::Received { .. } => {}
            Event::State {
                state, worker, at, ..
            } => {
                row.state = state.to_string();
                if *state == STARTED {
                    row.worker = Some(worker.to_string());
                    row.started_ms = Some(*at);
                }
            }
            Event::Finished {
                state,
                worker,
                at,
                result,
                error,
                ..
            } => {
                row.state = state.to_string();
                row.worker = Some(worker.to_string());
                row.finished_ms = Some(*at);
                row.result.clone_from(result);
                row.error.clone_from(error);
            }
            Event::Retry { error, retries, .. } => {
                row.state = RETRY.into();
                row.error = Some(error.clone());
                row.retries = *retries;
            }
            Event::Redelivered { .. } => row.deliveries += 1,
        }
    }

    fn upsert(&mut self, run: &WholeRun<'_>) {
        let row = self
            .jobs
            .entry(run.job.id.clone())
            .or_insert_with(|| JobRow {
                submitted_ms: Some(run.received_ms),
                ..new_row(run.job, run.state, Some(run.worker), 0)
            });
        row.state = run.state.into();
        row.worker = Some(run.worker.into());
        row.started_ms = Some(run.started_ms);
        row.finished_ms = Some(run.finished_ms);
        row.result = run.result.map(Into::into);
        row.error = run.error.map(Into::into);
        row.deliveries += 1;
    }

    fn add_history(&mut self, rows: &[FoldedHistory<'_>]) {
        for h in rows {
            let (events, count) = self.history.entry(h.job_id.to_string()).or_default();
            let first = EventRow {
                state: h.state.into(),
                worker: Some(h.worker.into()),
                at_ms: h.at_ms,
                detail: h.detail.as_deref().map(Into::into),
            };
            let unfolded = unfold(h.job_id, first, h.later.as_deref(), events);
            assert!(unfolded.is_ok(), "{unfolded:?}");
            *count += 1;
        }
    }
}

fn new_row(job: &NewJob, state: &str, worker: Option<&str>, deliveries: i64) -> JobRow {
    JobRow {
        id: job.id.clone(),
        task: job.task.clone(),
        queue: job.queue.clone(),
        args: job.args.clone(),
        server: job.server.clone(),
        recipe: job.recipe.clone(),
        kind: job.kind.clone(),
        hosts: job.hosts.clone(),
        batch: None,
        state: state.into(),
        worker: worker.map(Into::into),
        submitted_ms: None,
        started_ms: None,
        finished_ms: None,
        result: None,
        error: None,
        deliveries,
        retries: 0,
    }
}

/// The traffic written commit by commit, and event by event.
fn both_ways(t: &Traffic) -> (Model, Model) {
    let (mut batched, mut alone) = (Model::default(), Model::default());
    batched.insert_pending(&t.published);
    alone.insert_pending(&t.published);
    for commit in &t.commits {
        let events: Vec<&Event> = commit.iter().collect();
        let before: BTreeMap<String, usize> = batched
            .history
            .iter()
            .map(|(id, (_, rows))| (id.clone(), *rows))
            .collect();
        batched.apply(&plan(&events));
        // The folding decision: a commit adds at most one history row per job (one worker's).
        for (id, (_, rows)) in &batched.history {
            let added = rows - before.get(id).copied().unwrap_or(0);
            assert!(added <= 1, "job {id}: {added} history rows from one commit");
        }
        for ev in commit {
            alone.apply_alone(ev);
        }
    }
    (batched, alone)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Applying a commit leaves the rows that applying its events one by one does: the same
    /// `jobs` rows, and each job's history, unfolded, the same events in the same order.
    #[test]
    fn a_commit_leaves_the_rows_its_events_one_by_one_do(t in traffic()) {
        let (batched, alone) = both_ways(&t);
        prop_assert_eq!(&batched.jobs, &alone.jobs);
        let events = |m: &Model| -> BTreeMap<String, Vec<EventRow>> {
            m.history.iter().map(|(id, (events, _))| (id.clone(), events.clone())).collect()
        };
        prop_assert_eq!(events(&batched), events(&alone));
    }
}

/// A whole run is one upsert; the lone step of a job whose run began in an earlier commit is
/// skipped when a later event of the commit sets its state again.
#[test]
fn whole_runs_are_one_upsert_and_overwritten_steps_are_skipped() {
    let w = Shared::from("w");
    let job = NewJob {
        id: "a".into(),
        ..NewJob::default()
    };
    let state = |id: &str, state: &'static str, at| Event::State {
        id: id.into(),
        state,
        worker: w.clone(),
        at,
    };
    let finished = |id: &str, at| Event::Finished {
        id: id.into(),
        state: SUCCESS,
        worker: w.clone(),
        at,
        result: None,
        error: None,
    };
    let events = [
        Event::Received {
            job,
            worker: w.clone(),
            at: 1,
        },
        state("a", STARTED, 2),
        state("b", "deploy", 3),
        state("a", "running", 4),
        state("b", "active", 5),
        finished("a", 6),
        finished("b", 7),
    ];
    let all: Vec<&Event> = events.iter().collect();
    let commit = plan(&all);
    assert_eq!(commit.whole_runs.len(), 1);
    assert_eq!(
        (
            commit.whole_runs[0].job.id.as_str(),
            commit.whole_runs[0].started_ms
        ),
        ("a", 2)
    );
    let updates: Vec<(&str, i64)> = commit
        .updates
        .iter()
        .map(|ev| (event_id(ev), history_of(ev).3))
        .collect();
    assert_eq!(updates, [("b", 7)]);
}

/// A commit's events fold into one history row per job and worker, first event first; the
/// rest keep their state, time and detail, in order, in `later`.
#[test]
fn history_folds_each_jobs_events_into_one_row() {
    let (w1, w2) = (Shared::from("w1"), Shared::from("w2"));
    let state = |id: &str, state: &'static str, worker: &Shared, at| Event::State {
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
            state: FAILURE,
            worker: w1.clone(),
            at: 3,
            result: None,
            error: Some("boom \"x\"".into()),
        },
        state("b", "deploy", &w1, 4),
        state("a", STARTED, &w2, 5),
    ];
    let all: Vec<&Event> = events.iter().collect();
    let row = |job_id, worker, at_ms, later: Option<&str>| FoldedHistory {
        job_id,
        state: STARTED,
        worker,
        at_ms,
        detail: None,
        later: later.map(Into::into),
    };
    assert_eq!(
        plan(&all).history,
        [
            row("a", "w1", 1, Some(r#"[["FAILURE",3,"boom \"x\""]]"#)),
            row("b", "w1", 2, Some(r#"[["deploy",4,null]]"#)),
            row("a", "w2", 5, None),
        ]
    );
}

#[test]
fn an_unreadable_later_names_its_job() {
    let first = EventRow {
        state: PENDING.into(),
        worker: None,
        at_ms: 1,
        detail: None,
    };
    let err = unfold("x", first, Some("{"), &mut Vec::new()).map_err(|e| e.to_string());
    assert!(
        err.as_ref()
            .is_err_and(|e| e.contains("history of job x is unreadable")),
        "{err:?}"
    );
}

#[test]
fn rows_split_into_a_few_recurring_sizes_in_order() {
    let rows: Vec<u32> = (0..75).collect();
    let sizes: Vec<usize> = chunks(&rows, 32).map(<[u32]>::len).collect();
    assert_eq!(sizes, [32, 32, 8, 2, 1]);
    let back: Vec<u32> = chunks(&rows, 32).flatten().copied().collect();
    assert_eq!(back, rows);
    assert_eq!(chunks::<u32>(&[], 32).count(), 0);
}

//! The batching property against a small in-memory model of the `jobs` and `job_events` rows
//! (the real databases are checked in each backend's tests, against the same model).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::store::testing::{traffic, Model, Traffic};
use crate::store::{SharedText, FAILURE, SUCCESS};

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
    let w = SharedText::from("w");
    let job = NewJob {
        id: "a".into(),
        ..NewJob::default()
    };
    let state = |id: &str, state: &'static str, at| Event::State {
        id: id.into(),
        state: state.into(),
        worker: w.clone(),
        at,
    };
    let finished = |id: &str, at| Event::Finished {
        spawned: Vec::new(),
        id: id.into(),
        state: SUCCESS,
        worker: w.clone(),
        at,
        result: None,
        error: None,
        output: None,
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
    let (w1, w2) = (SharedText::from("w1"), SharedText::from("w2"));
    let state = |id: &str, state: &'static str, worker: &SharedText, at| Event::State {
        id: id.into(),
        state: state.into(),
        worker: worker.clone(),
        at,
    };
    let events = [
        state("a", STARTED, &w1, 1),
        state("b", STARTED, &w1, 2),
        Event::Finished {
            spawned: Vec::new(),
            id: "a".into(),
            state: FAILURE,
            worker: w1.clone(),
            at: 3,
            result: None,
            error: Some("boom \"x\"".into()),
            output: None,
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

/// A lease is a history entry of its own, its end in the detail; it sets no state, so the step
/// before it is not skipped for it, and a run with a lease is not one upsert.
#[test]
fn a_lease_is_noted_and_keeps_its_run_from_being_one_upsert() {
    let w = SharedText::from("w");
    let state = |state: Cow<'static, str>, at| Event::State {
        id: "a".into(),
        state,
        worker: w.clone(),
        at,
    };
    let events = [
        Event::Received {
            job: NewJob {
                id: "a".into(),
                ..NewJob::default()
            },
            worker: w.clone(),
            at: 1,
        },
        state(STARTED.into(), 2),
        state(Cow::Owned("compiling".into()), 3),
        Event::Leased {
            id: "a".into(),
            worker: w.clone(),
            at: 4,
            until: 61_000,
        },
    ];
    let all: Vec<&Event> = events.iter().collect();
    let commit = plan(&all);
    assert!(commit.whole_runs.is_empty());
    let updates: Vec<i64> = commit.updates.iter().map(|ev| history_of(ev).3).collect();
    assert_eq!(updates, [1, 2, 3, 4]);
    assert_eq!(
        commit.history[0].later.as_deref(),
        Some(
            r#"[["STARTED",2,null],["compiling",3,null],["LEASED",4,"acked; lease until 1970-01-01T00:01:01.000Z"]]"#
        )
    );
}

//! The store through its public API and the group-commit writer, on either backend, by topic
//! as the backends' files are. The scenarios that take a store are run here on an SQLite file
//! and by `postgres/tests.rs` on PostgreSQL.

pub(super) mod commit;
pub(super) mod controls;
pub(super) mod counts;
pub(super) mod firings;
pub(super) mod flow;
pub(super) mod jobs;
pub(super) mod leases;
pub(super) mod rates;
pub(super) mod revokes;
pub(super) mod schedule;
pub(super) mod unique;
pub(super) mod workflow;

use std::borrow::Cow;

use super::testing::Traffic;
use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn run(id: &str) -> Vec<Event> {
    let w = SharedText::from("l1@h");
    let state = |s: &'static str, at| Event::State {
        id: id.into(),
        state: s.into(),
        worker: w.clone(),
        at,
    };
    vec![
        Event::Received {
            job: NewJob {
                id: id.into(),
                task: "cm.launch".into(),
                queue: "q".into(),
                args: "[]".into(),
                submitted_ms: 2,
                ..NewJob::default()
            },
            worker: w.clone(),
            at: 2,
        },
        state(STARTED, 3),
        state("running", 4),
        state("deploy", 5),
        Event::Finished {
            spawned: Vec::new(),
            id: id.into(),
            state: SUCCESS,
            worker: w.clone(),
            at: 6,
            result: Some("{}".into()),
            error: None,
            output: None,
        },
    ]
}

/// Every job and its history, as the public API reads them.
async fn everything(store: &Store) -> Result<Vec<(JobRow, Vec<EventRow>)>, StoreError> {
    let mut jobs = store.list(&JobFilter::default()).await?;
    jobs.sort_by(|a, b| a.job.id.cmp(&b.job.id));
    let mut out = Vec::new();
    for row in jobs {
        let history = store.history(&row.job.id).await?;
        out.push((row, history));
    }
    Ok(out)
}

fn published(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        task: "cm.launch".into(),
        queue: "q".into(),
        args: "[]".into(),
        submitted_ms: 1,
        ..NewJob::default()
    }
}

/// A run of job `id` on `worker`: received at `at`, started, the `steps`, ended as `end`.
fn run_on(
    id: &str,
    worker: &str,
    at: i64,
    steps: &[&'static str],
    end: &'static str,
) -> Vec<Event> {
    let w = SharedText::from(worker);
    let mut events = vec![Event::Received {
        job: published(id),
        worker: w.clone(),
        at,
    }];
    for (i, step) in std::iter::once(&STARTED).chain(steps).enumerate() {
        events.push(Event::State {
            id: id.into(),
            state: Cow::Borrowed(step),
            worker: w.clone(),
            at: at + 1 + i as i64,
        });
    }
    events.push(Event::Finished {
        spawned: Vec::new(),
        id: id.into(),
        state: end,
        worker: w,
        at: at + 10,
        result: Some(format!(r#"{{"by": "{worker}"}}"#)),
        error: None,
        output: Some(format!("output of {worker}\n")),
    });
    events
}

/// `t` through a writer: each of its commits as one transaction, or every event alone.
async fn write(store: &Store, t: &Traffic, event_by_event: bool) -> Result<(), StoreError> {
    store.reset().await?;
    store.insert_pending(&t.published).await?;
    let writer = store.writer_with(1, Duration::ZERO)?;
    for commit in &t.commits {
        if event_by_event {
            for ev in commit {
                writer.commit(ev.clone()).await?;
            }
        } else if let Some((last, before)) = commit.split_last() {
            // Queued before the writer runs again: one transaction takes them all.
            for ev in before {
                writer.send(ev.clone());
            }
            writer.commit(last.clone()).await?;
        }
    }
    Ok(())
}

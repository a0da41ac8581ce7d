//! Realistic worker traffic for the store's property tests: several jobs, some published first
//! and some from Celery clients, interleaved; runs cut short by a dying worker, retries,
//! redeliveries of finished jobs, two workers; each worker's events cut into commits at random.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{Event, NewJob, Shared, FAILURE, STARTED, SUCCESS};

pub(super) const WORKERS: [&str; 2] = ["w1@h", "w2@h"];

/// What the store sees, in order: `published` (one `insert_pending`), then the commits.
#[derive(Debug, Clone)]
pub(super) struct Traffic {
    pub published: Vec<NewJob>,
    /// Each is one worker's events, in the order it sent them.
    pub commits: Vec<Vec<Event>>,
}

#[derive(Debug, Clone, Copy)]
enum End {
    Success,
    Failure,
    Retry,
    /// The worker died mid-run: the job comes back on its next delivery.
    Killed,
}

#[derive(Debug, Clone)]
struct Delivery {
    worker: usize,
    steps: usize,
    end: End,
}

#[derive(Debug, Clone)]
struct JobPlan {
    published: bool,
    deliveries: Vec<Delivery>,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let end = prop_oneof![
        4 => Just(End::Success),
        1 => Just(End::Failure),
        1 => Just(End::Retry),
        1 => Just(End::Killed),
    ];
    (0..WORKERS.len(), 0..4usize, end).prop_map(|(worker, steps, end)| Delivery {
        worker,
        steps,
        end,
    })
}

fn job_plan() -> impl Strategy<Value = JobPlan> {
    (any::<bool>(), prop::collection::vec(delivery(), 1..4)).prop_map(|(published, deliveries)| {
        JobPlan {
            published,
            deliveries,
        }
    })
}

/// Traffic of 1 to 6 jobs.
pub(super) fn traffic() -> impl Strategy<Value = Traffic> {
    (
        prop::collection::vec(job_plan(), 1..7),
        prop::collection::vec(any::<u8>(), 64),
        prop::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(plans, picks, cuts)| build(&plans, &picks, &cuts))
}

fn new_job(i: usize, published: bool) -> NewJob {
    NewJob {
        id: format!("job-{i}"),
        task: "cm.launch".into(),
        queue: "q".into(),
        args: r#"[[], {"server": "s"}]"#.into(),
        server: Some("s".into()),
        recipe: Some("Hadoop".into()),
        kind: Some("vm".into()),
        hosts: Some(format!("h{i}")),
        batch: published.then(|| "b".into()),
        submitted_ms: 0,
    }
}

/// One job's events, in order, each with its worker, times left at 0.
fn job_events(i: usize, plan: &JobPlan) -> VecDeque<(usize, Event)> {
    const STEPS: [&str; 3] = ["running", "deploy", "active"];
    let id = Shared::from(format!("job-{i}"));
    let mut out = VecDeque::new();
    let mut final_state: Option<&str> = None;
    let mut retries = 0;
    for d in &plan.deliveries {
        let worker = Shared::from(WORKERS[d.worker]);
        let mut push = |ev| out.push_back((d.worker, ev));
        if let Some(state) = final_state {
            // A worker looks a redelivered job up, finds it final, and only notes it.
            push(Event::Redelivered {
                id: id.clone(),
                state: state.into(),
                worker,
                at: 0,
            });
            continue;
        }
        push(Event::Received {
            job: new_job(i, false),
            worker: worker.clone(),
            at: 0,
        });
        for state in std::iter::once(STARTED).chain(STEPS.into_iter().take(d.steps)) {
            push(Event::State {
                id: id.clone(),
                state,
                worker: worker.clone(),
                at: 0,
            });
        }
        let (state, result, error) = match d.end {
            End::Success => (SUCCESS, Some(r#"{"ok": true}"#.to_string()), None),
            End::Failure => (FAILURE, None, Some(r#"boom "quoted", 'x'"#.to_string())),
            End::Retry => {
                retries += 1;
                push(Event::Retry {
                    id: id.clone(),
                    worker,
                    at: 0,
                    error: "boom".into(),
                    retries,
                });
                continue;
            }
            End::Killed => continue,
        };
        final_state = Some(state);
        push(Event::Finished {
            id: id.clone(),
            state,
            worker,
            at: 0,
            result,
            error,
        });
    }
    out
}

fn set_time(ev: &mut Event, t: i64) {
    match ev {
        Event::Received { job, at, .. } => {
            job.submitted_ms = t;
            *at = t;
        }
        Event::State { at, .. }
        | Event::Finished { at, .. }
        | Event::Retry { at, .. }
        | Event::Redelivered { at, .. } => *at = t,
    }
}

/// Interleaves the jobs' events (`picks` choose whose comes next) and cuts each worker's
/// events into commits (`cuts` say where). A job that moves to the other worker comes back
/// only once the first one's commit is done (or lost, with the worker): its commit goes first.
fn build(plans: &[JobPlan], picks: &[u8], cuts: &[u8]) -> Traffic {
    let published = plans
        .iter()
        .enumerate()
        .filter(|(_, p)| p.published)
        .map(|(i, _)| NewJob {
            submitted_ms: 1,
            ..new_job(i, true)
        })
        .collect();
    let mut queues: Vec<VecDeque<(usize, Event)>> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| job_events(i, p))
        .collect();
    let mut last_worker: Vec<Option<usize>> = vec![None; plans.len()];
    let mut pending: Vec<Vec<Event>> = vec![Vec::new(); WORKERS.len()];
    let mut commits = Vec::new();
    let mut clock = 10;
    for k in 0.. {
        let live: Vec<usize> = (0..queues.len())
            .filter(|&j| !queues[j].is_empty())
            .collect();
        if live.is_empty() {
            break;
        }
        let job = live[usize::from(picks[k % picks.len()]) % live.len()];
        let Some((worker, mut ev)) = queues[job].pop_front() else {
            break;
        };
        if let Some(before) = last_worker[job].filter(|w| *w != worker) {
            if !pending[before].is_empty() {
                commits.push(std::mem::take(&mut pending[before]));
            }
        }
        last_worker[job] = Some(worker);
        clock += 1;
        set_time(&mut ev, clock);
        pending[worker].push(ev);
        if cuts[k % cuts.len()].is_multiple_of(3) {
            commits.push(std::mem::take(&mut pending[worker]));
        }
    }
    commits.extend(pending.into_iter().filter(|p| !p.is_empty()));
    Traffic { published, commits }
}

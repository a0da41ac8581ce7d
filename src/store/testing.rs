//! Realistic worker traffic for the store's property tests: several jobs, some published first
//! and some from Celery clients, interleaved; runs cut short by a dying worker, retries,
//! redeliveries of finished jobs (noted, or run again by a worker that did not look), long jobs
//! that take a lease, commands with output and steps of their own, two workers; each worker's
//! events cut into commits at random. And [`Model`], what the SQL does, on plain maps.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::batch::{event_id, history_of, published, unfold, Commit, FoldedHistory, WholeRun};
use super::{
    is_final, Event, EventRow, JobRow, JobSpec, NewJob, SharedText, FAILURE, PENDING, RECEIVED,
    RETRY, REVOKED, STARTED, SUCCESS,
};

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
    /// The worker gave it back mid-run (stopping, the store failed it): PENDING again.
    GivenBack,
    /// A command terminated by a revoke.
    Revoked,
}

#[derive(Debug, Clone)]
struct Delivery {
    worker: usize,
    steps: usize,
    end: End,
    /// A long command: it takes a lease after STARTED, has steps of its own and output.
    long: bool,
    /// Of a job already final, run anyway (a worker that did not look: the redelivered long
    /// job of the "first final wins" bug), not only noted.
    blind: bool,
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
        1 => Just(End::GivenBack),
        1 => Just(End::Revoked),
    ];
    (
        0..WORKERS.len(),
        0..4usize,
        end,
        any::<bool>(),
        prop::bool::weighted(0.5),
    )
        .prop_map(|(worker, steps, end, long, blind)| Delivery {
            worker,
            steps,
            end,
            long,
            blind,
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
        options: Default::default(),
    }
}

/// One job's events, in order, each with its worker, times left at 0.
fn job_events(i: usize, plan: &JobPlan) -> VecDeque<(usize, Event)> {
    const STEPS: [&str; 3] = ["running", "deploy", "active"];
    let id = SharedText::from(format!("job-{i}"));
    let mut out = VecDeque::new();
    let mut final_state: Option<&str> = None;
    let mut retries = 0;
    let mut last_worker = None;
    for (run, d) in plan.deliveries.iter().enumerate() {
        // A run of a final job goes to the other worker (the bug's redelivery did): its events
        // then start a commit of their own, often a whole run over a final row.
        let at = match (final_state, last_worker) {
            (Some(_), Some(last)) if d.blind => (last + 1) % WORKERS.len(),
            _ => d.worker,
        };
        last_worker = Some(at);
        let worker = SharedText::from(WORKERS[at]);
        let mut push = |ev| out.push_back((at, ev));
        if let (Some(state), false) = (final_state, d.blind) {
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
        push(Event::State {
            id: id.clone(),
            state: STARTED.into(),
            worker: worker.clone(),
            at: 0,
        });
        if d.long {
            push(Event::Leased {
                id: id.clone(),
                worker: worker.clone(),
                at: 0,
                until: 0,
            });
        }
        for (k, step) in STEPS.into_iter().take(d.steps).enumerate() {
            let state = if d.long {
                Cow::Owned(format!("step-{k}"))
            } else {
                Cow::Borrowed(step)
            };
            push(Event::State {
                id: id.clone(),
                state,
                worker: worker.clone(),
                at: 0,
            });
        }
        let (state, result, error) = match d.end {
            // Each run's own result and error: a row another run overwrote shows.
            End::Success => (
                SUCCESS,
                Some(format!(r#"{{"ok": true, "run": {run}}}"#)),
                None,
            ),
            End::Failure => (FAILURE, None, Some(format!(r#"boom "quoted", 'x' {run}"#))),
            End::Revoked => (REVOKED, None, Some("terminated (SIGTERM)".to_string())),
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
            // A leased job is published again, not given back: that is the lease's business.
            End::Killed | End::GivenBack if d.long => continue,
            End::Killed => continue,
            End::GivenBack => {
                push(Event::GivenBack {
                    id: id.clone(),
                    worker,
                    at: 0,
                    why: "stopping".into(),
                });
                continue;
            }
        };
        // The first final state is the one a later look finds.
        final_state.get_or_insert(state);
        push(Event::Finished {
            spawned: Vec::new(),
            id: id.clone(),
            state,
            worker,
            at: 0,
            result,
            error,
            output: d
                .long
                .then(|| format!("last line of run on {}\n", WORKERS[at])),
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
        Event::Leased { at, until, .. } => {
            *at = t;
            *until = t + 60_000;
        }
        Event::State { at, .. }
        | Event::Finished { at, .. }
        | Event::Retry { at, .. }
        | Event::GivenBack { at, .. }
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

/// What the SQL of each row write does, on plain maps: the rules the backends' statements
/// follow, written once more in the plainest way.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Model {
    pub jobs: BTreeMap<String, JobRow>,
    /// Each job's history rows as stored: (its events unfolded, how many rows).
    pub history: BTreeMap<String, (Vec<EventRow>, usize)>,
}

impl Model {
    /// `t` applied event by event.
    pub fn of(t: &Traffic) -> Self {
        let mut model = Self::default();
        model.insert_pending(&t.published);
        for ev in t.commits.iter().flatten() {
            model.apply_alone(ev);
        }
        model
    }

    /// Every job and its history, in order of id, as the store's API reads them.
    pub fn everything(&self) -> Vec<(JobRow, Vec<EventRow>)> {
        self.jobs
            .values()
            .map(|row| {
                let history = self.history.get(&row.job.id).map(|(h, _)| h.clone());
                (row.clone(), history.unwrap_or_default())
            })
            .collect()
    }

    pub fn insert_pending(&mut self, jobs: &[NewJob]) {
        for job in jobs {
            self.jobs.entry(job.id.clone()).or_insert_with(|| {
                let mut row = new_row(job, job.submitted_ms, PENDING, None);
                row.job.batch.clone_from(&job.batch);
                row
            });
        }
        self.add_history(&published(jobs));
    }

    /// One event in a commit of its own, as a worker with nothing to group would write it.
    pub fn apply_alone(&mut self, ev: &Event) {
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

    pub fn apply(&mut self, commit: &Commit<'_>) {
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
            let row = self
                .jobs
                .entry(id.to_string())
                .or_insert_with(|| new_row(job, *at, RECEIVED, Some(worker)));
            if !is_final(&row.state) {
                row.deliveries += 1;
                row.state = RECEIVED.into();
                row.worker = Some(worker.to_string());
                (row.lease_owner, row.lease_until) = (None, None);
            }
            return;
        }
        let Some(row) = self.jobs.get_mut(id) else {
            return;
        };
        if let Event::Redelivered { .. } = ev {
            row.deliveries += 1;
            return;
        }
        // The first final state wins: another run's events leave the row as it is.
        if is_final(&row.state) {
            return;
        }
        match ev {
            Event::Received { .. } | Event::Redelivered { .. } => {}
            Event::State {
                state, worker, at, ..
            } => {
                row.state = state.to_string();
                if state == STARTED {
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
                output,
                ..
            } => {
                row.state = state.to_string();
                row.worker = Some(worker.to_string());
                row.finished_ms = Some(*at);
                row.result.clone_from(result);
                row.error.clone_from(error);
                row.output.clone_from(output);
                (row.lease_owner, row.lease_until) = (None, None);
            }
            Event::Retry { error, retries, .. } => {
                row.state = RETRY.into();
                row.error = Some(error.clone());
                row.retries = *retries;
                (row.lease_owner, row.lease_until) = (None, None);
            }
            Event::GivenBack { worker, .. } => {
                if row.worker.as_deref() == Some(&**worker) {
                    row.state = PENDING.into();
                }
            }
            Event::Leased { worker, until, .. } => {
                row.lease_owner = Some(worker.to_string());
                row.lease_until = Some(*until);
            }
        }
    }

    fn upsert(&mut self, run: &WholeRun<'_>) {
        let row = self
            .jobs
            .entry(run.job.id.clone())
            .or_insert_with(|| new_row(run.job, run.received_ms, RECEIVED, None));
        if is_final(&row.state) {
            return;
        }
        row.deliveries += 1;
        row.state = run.state.into();
        row.worker = Some(run.worker.into());
        row.started_ms = Some(run.started_ms);
        row.finished_ms = Some(run.finished_ms);
        row.result = run.result.map(Into::into);
        row.error = run.error.map(Into::into);
        row.output = run.output.map(Into::into);
        (row.lease_owner, row.lease_until) = (None, None);
    }

    pub fn add_history(&mut self, rows: &[FoldedHistory<'_>]) {
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

/// The row a first write of `job` at `at` makes: without its batch, which only its publisher
/// writes.
fn new_row(job: &NewJob, at: i64, state: &str, worker: Option<&str>) -> JobRow {
    JobRow {
        job: JobSpec {
            id: job.id.clone(),
            task: job.task.clone(),
            queue: job.queue.clone(),
            args: job.args.clone(),
            server: job.server.clone(),
            recipe: job.recipe.clone(),
            kind: job.kind.clone(),
            hosts: job.hosts.clone(),
            batch: None,
            submitted_ms: Some(at),
            options: job.options.clone(),
        },
        state: state.into(),
        worker: worker.map(Into::into),
        started_ms: None,
        finished_ms: None,
        result: None,
        error: None,
        deliveries: 0,
        retries: 0,
        output: None,
        lease_owner: None,
        lease_until: None,
        waits_for: None,
    }
}

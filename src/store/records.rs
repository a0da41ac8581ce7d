//! What callers hand the store and what they read back: a new job, a worker's events, a job's
//! row and history, revokes, and the filters and counts of the lists.

use std::borrow::Cow;

use serde::Serialize;

/// What a job is, as it was published (or first received from a Celery client): its id,
/// task, queue, arguments and labels, and when it came. A new job always has that time; a
/// stored row's may be unknown, hence the parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobSpec<Submitted = i64> {
    pub id: String,
    pub task: String,
    pub queue: String,
    /// `[args, kwargs]` as JSON.
    pub args: String,
    pub server: Option<String>,
    pub recipe: Option<String>,
    pub kind: Option<String>,
    pub hosts: Option<String>,
    /// All jobs published by one command or one form submission share a batch id.
    pub batch: Option<String>,
    pub submitted_ms: Submitted,
    /// What the store keeps of its message, written when the job is first recorded (by its
    /// publisher, or the first worker to receive it from a Celery client): every re-publish
    /// sends the message as it came. Boxed: a worker's events carry it, and most of them
    /// are smaller.
    #[serde(flatten)]
    pub options: Box<MessageOptions>,
}

/// What is known of a job when it is published (or first received from a Celery client).
pub type NewJob = JobSpec;

/// Text a job's events share: its id, the worker's node name. Cloned into each of a job's six
/// events without a copy.
pub type SharedText = std::sync::Arc<str>;

/// One state transition, as a worker reports it.
#[derive(Debug, Clone)]
pub enum Event {
    Received {
        job: NewJob,
        worker: SharedText,
        at: i64,
    },
    /// STARTED, or a step: the simulations' are borrowed, a command's `cm-state:` lines owned.
    State {
        id: SharedText,
        state: Cow<'static, str>,
        worker: SharedText,
        at: i64,
    },
    /// SUCCESS, FAILURE, or REVOKED (a command terminated by a revoke). Clears the lease.
    Finished {
        id: SharedText,
        state: &'static str,
        worker: SharedText,
        at: i64,
        result: Option<String>,
        error: Option<String>,
        /// The tail of a command's output.
        output: Option<String>,
        /// What this end starts or ends with it (Celery's canvas); empty for a plain job.
        spawned: Vec<Spawned>,
    },
    Retry {
        id: SharedText,
        worker: SharedText,
        at: i64,
        error: String,
        retries: i64,
    },
    /// A redelivery of a job that is already final: counted, recorded, not run again.
    Redelivered {
        id: SharedText,
        state: String,
        worker: SharedText,
        at: i64,
    },
    /// The worker gives the job back unfinished (it is stopping, the store or the broker failed
    /// it) and returns its message to the queue: the job is PENDING again, with a REQUEUED
    /// history row saying why. Written before the message goes back, so no later run's RECEIVED
    /// can come first; a row that is final, or that another worker holds by now, keeps its state.
    GivenBack {
        id: SharedText,
        worker: SharedText,
        at: i64,
        why: String,
    },
    /// A long job's worker holds it until `until` (ms since the epoch), renewing as it runs, and
    /// acks its message once this is committed; should the lease lapse, a reaper publishes the
    /// job again. Does not change the job's state.
    Leased {
        id: SharedText,
        worker: SharedText,
        at: i64,
        until: i64,
    },
}

/// A job as the store holds it: what it is, its state and its last run. Serialised as one flat
/// object, as `cm jobs --json` and `/api/jobs` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// What the job is: the row's columns as its publisher or first receiver wrote them.
    #[serde(flatten)]
    pub job: JobSpec<Option<i64>>,
    pub state: String,
    pub worker: Option<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub deliveries: i64,
    pub retries: i64,
    /// The last 64 KiB of a command job's output.
    pub output: Option<String>,
    /// The worker that holds the job's lease, and until when (ms since the epoch).
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    /// Why the job waits: stored for a THROTTLED one ("rate limit 10/m of TASK", "key h1 held
    /// by job X"), worked out for the others by [`Store::explain_waits`](super::Store::explain_waits)
    /// ("after job Y", "held by worker W", "queue Q paused").
    pub waits_for: Option<String>,
}

impl JobRow {
    /// Why the job waits, while it has not started (THROTTLED, WAITING, PENDING, RECEIVED).
    pub fn waiting_for(&self) -> Option<&str> {
        matches!(
            self.state.as_str(),
            super::THROTTLED | super::WAITING | super::PENDING | super::RECEIVED
        )
        .then_some(self.waits_for.as_deref())
        .flatten()
    }
}

/// What the store keeps of a job's message besides its task and arguments, so that every
/// re-publish sends it as it came: times in ms since the epoch, limits in ms, and what Celery's
/// canvas puts in it. All `None` for a plain job (NULL columns, nothing more written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MessageOptions {
    pub eta_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub time_limit_ms: Option<i64>,
    pub soft_time_limit_ms: Option<i64>,
    /// Where an rpc:// client waits for the result.
    pub reply_to: Option<String>,
    /// The message's priority (0-9): the jobs the store holds are released highest first.
    pub priority: i64,
    /// The body's callbacks, errbacks and chain (Celery signatures), as JSON, when any.
    pub embed: Option<String>,
    /// The `group` header: the group this job is a member of, and its place in it.
    pub group_id: Option<String>,
    pub group_index: Option<i64>,
    /// The job whose end published this one (a chain's previous step, a linked job's parent).
    pub parent_id: Option<String>,
    /// The first job of its workflow.
    pub root_id: Option<String>,
}

impl MessageOptions {
    /// Nothing to keep: a plain job's message.
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }
}

/// A job's group as people read it: `ID #INDEX` (`None`: it is in none).
pub fn canvas_group(o: &MessageOptions) -> Option<String> {
    let group = o.group_id.as_ref()?;
    Some(match o.group_index {
        Some(i) => format!("{group} #{i}"),
        None => group.clone(),
    })
}

/// A job that a job's final state starts or ends with it (Celery's canvas: the next step of a
/// chain, a callback, an errback; the rest of a chain whose step failed). Written in the
/// transaction of that final state, and only if that state is the one stored (the first final
/// state wins): a job ends once, and what it starts is started once.
#[derive(Debug, Clone, PartialEq)]
pub struct Spawned {
    /// The job, its message's options with it.
    pub job: NewJob,
    /// PENDING: due at once, published from the outbox. FAILURE: ended at once, with `error`
    /// (a step that can never run); the outbox sends its rpc:// reply where it has a reply_to.
    pub state: &'static str,
    pub error: Option<String>,
    /// Its history row's detail (why it came).
    pub why: String,
}

/// What [`Store::revoke`](super::Store::revoke) did to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoked {
    pub id: String,
    /// The job's state after; `None`: no such job yet (the revoke is kept for when it comes:
    /// Celery clients revoke ids before they arrive).
    pub state: Option<String>,
}

/// A revoke as workers read it ([`Store::revokes_since`](super::Store::revokes_since)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoke {
    pub id: String,
    /// When it was made or last upgraded to terminate (ms since the epoch).
    pub at_ms: i64,
    /// Whether a running job is to be ended, not only kept from starting.
    pub terminate: bool,
    /// The signal for a terminate (`None`: the worker's default).
    pub signal: Option<String>,
    /// Who revoked (a node, `cm@host`), for the job's error.
    pub by: Option<String>,
}

/// One event of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub state: String,
    pub worker: Option<String>,
    pub at_ms: i64,
    pub detail: Option<String>,
}

/// Which jobs to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<String>,
    pub queue: Option<String>,
    pub server: Option<String>,
    pub recipe: Option<String>,
    pub batch: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

impl JobFilter {
    /// The `jobs` columns this filter narrows, with the value each must equal.
    pub(super) fn columns(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("state", &self.state),
            ("queue", &self.queue),
            ("server", &self.server),
            ("recipe", &self.recipe),
            ("batch", &self.batch),
        ]
        .into_iter()
        .filter_map(|(column, value)| Some((column, value.as_deref().filter(|v| !v.is_empty())?)))
    }

    /// `Some` when the counts the store keeps per state answer this filter: no column but
    /// `state` narrows it. Inside, the state it narrows to (`None`: every state).
    pub(super) fn kept_counts(&self) -> Option<Option<&str>> {
        let mut state = None;
        for (column, value) in self.columns() {
            if column != "state" {
                return None;
            }
            state = Some(value);
        }
        Some(state)
    }
}

/// (name, jobs) pairs in order of name: jobs per state, or per worker.
pub type Counts = Vec<(String, i64)>;

/// Run times (`finished_ms - started_ms`) of every job that has both, bucketed by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationHistogram {
    /// How many jobs ran at most `bound_ms`, for each requested bound (cumulative).
    pub at_most: Vec<(i64, i64)>,
    pub count: i64,
    pub sum_ms: i64,
}

/// A unique job's claim on its key (`[tasks."NAME"] unique`), stored with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueClaim {
    pub job_id: String,
    pub key: String,
    /// How long the key is held: [`UNIQUE_QUEUED`] or [`UNIQUE_UNFINISHED`].
    pub hold: &'static str,
}

/// Held until the job starts.
pub const UNIQUE_QUEUED: &str = "queued";
/// Held until the job ends (SUCCESS, FAILURE, REVOKED); a retry's wait holds it too.
pub const UNIQUE_UNFINISHED: &str = "unfinished";

/// A job that was not stored because its key is held: `holder` is the job that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub job_id: String,
    pub key: String,
    pub holder: String,
}

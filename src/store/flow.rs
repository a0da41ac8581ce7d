//! Flow control in the store (issue 31): global rate limits and concurrency keys. A job whose
//! task has either passes through one or more *gates*; its worker asks the store
//! ([`Store::admit_flow`]) in one transaction that locks each gate's row: either the job may
//! start (its place is taken in that transaction: a rate's next start moves on, a key's slot
//! is a row), or it is recorded [`THROTTLED`](super::THROTTLED) with why, and its message
//! acked. Each worker session's releaser then grants the held jobs places as they come
//! ([`Store::release_held`]), highest priority first, then submit order, and publishes them
//! again. A slot is freed in the transaction of its job's final state (a trigger in each
//! backend's migration 0014).

use super::requests::Claim;
use super::{now_ms, Backend, JobRow, MessageOptions, NewJob, Store, StoreError};

/// A gate's rule, as the admitting worker's config says it.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// At most one start per `interval_ms` (a rate of n per period: period / n), across every
    /// worker sharing the store.
    Rate { interval_ms: f64 },
    /// At most `slots` jobs holding the gate at once (started and not final).
    Key { slots: i64 },
}

impl Rule {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Rule::Rate { .. } => "rate",
            Rule::Key { .. } => "key",
        }
    }

    pub(super) fn interval_ms(&self) -> f64 {
        match self {
            Rule::Rate { interval_ms } => *interval_ms,
            Rule::Key { .. } => 0.0,
        }
    }

    pub(super) fn slots(&self) -> i64 {
        match self {
            Rule::Rate { .. } => 0,
            Rule::Key { slots } => *slots,
        }
    }
}

/// One gate a job passes: `name` is its row (`rate:TASK`, `key:VALUE`), `reason` how a job
/// held by it reads ("rate limit 10/m of TASK", "key h1").
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub name: String,
    pub rule: Rule,
    pub reason: String,
}

/// What [`Store::admit_flow`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Its places are taken: it starts now.
    Go,
    /// Recorded THROTTLED with this reason: its message may be acked.
    Held { reason: String },
}

/// A job at its gates: what [`Store::admit_flow`] hands a backend.
#[derive(Debug, Clone)]
pub(super) struct Admitting {
    pub job: NewJob,
    pub options: MessageOptions,
    /// In name order, the order every transaction locks them in (no two wait in a circle).
    pub gates: Vec<Gate>,
    pub worker: String,
    pub now_ms: i64,
}

/// How far behind its grid a rate may catch up: a releaser polls about this often, so a
/// poll a little late still grants the starts due since the last one.
const CATCH_UP_MS: f64 = 100.0;

/// The next start of a rate whose next start was `next_ms`, if one may start at `now_ms`.
/// A rate idle for a while banks no starts: after an idle time, at most the starts of
/// [`CATCH_UP_MS`] (or of one interval, if longer) go at once.
pub(super) fn take_rate(next_ms: f64, interval_ms: f64, now_ms: f64) -> Option<f64> {
    let catch_up = interval_ms.max(CATCH_UP_MS);
    (next_ms <= now_ms).then(|| next_ms.max(now_ms - catch_up) + interval_ms)
}

/// A grant not used within this long (its job's message lost, say) no longer counts as in
/// flight.
pub(super) const IN_FLIGHT_FOR_MS: i64 = 10_000;

/// How many more jobs a releaser may grant at a rate while `in_flight` of its grants are
/// published and not yet received: a poll's worth of starts (one at least). A granted job's
/// message queues behind those not yet admitted; without this bound, grants made while a
/// backlog drains would start together once it has.
pub(super) fn grants_allowed(interval_ms: f64, in_flight: i64) -> i64 {
    let poll = (CATCH_UP_MS / interval_ms).ceil().max(1.0);
    (poll as i64 - in_flight).max(0)
}

/// How many starts a rate allows at `now_ms`, at most `most`, and its next start after them.
pub(super) fn rate_starts(next_ms: f64, interval_ms: f64, now_ms: f64, most: i64) -> (i64, f64) {
    let (mut n, mut next) = (0, next_ms);
    while n < most {
        match take_rate(next, interval_ms, now_ms) {
            Some(after) => {
                next = after;
                n += 1;
            }
            None => break,
        }
    }
    (n, next)
}

/// Gate `g` as the rule in force: an operator's rate (`store::rates`), read in the
/// transaction that holds the gate, over the one the admitting worker's config gave.
pub(super) fn in_force(g: &Gate, over: Option<(f64, String)>) -> Gate {
    match over {
        Some((interval_ms, rate)) if matches!(g.rule, Rule::Rate { .. }) => Gate {
            name: g.name.clone(),
            rule: Rule::Rate { interval_ms },
            reason: super::rates::reason(super::rates::task_of(&g.name), &rate),
        },
        _ => g.clone(),
    }
}

/// Whether `g` limits nothing: a rate an operator turned off, or one whose config was taken
/// back to none.
pub(super) fn unlimited(g: &Gate) -> bool {
    matches!(g.rule, Rule::Rate { interval_ms } if interval_ms <= 0.0)
}

/// Why a job waits behind jobs already held at a gate it could pass: they go first.
pub(super) fn behind(gate: &Gate) -> String {
    format!("{} (behind jobs already waiting)", gate.reason)
}

/// Why a job waits at a key whose slots are all held, `holder` one of them.
pub(super) fn key_held(gate: &Gate, holder: &str) -> String {
    format!("{} held by job {holder}", gate.reason)
}

impl Store {
    /// Takes job `job`'s places at `gates` (any it holds already, from a grant or an earlier
    /// delivery, are kept, not taken twice), or, when one is spent, records it THROTTLED with
    /// why, its message's options and `options.priority`, and a THROTTLED history row. One
    /// transaction, which locks each gate's row: of two workers admitting at one gate, the
    /// second sees what the first took. A job held by a gate that others already wait at
    /// waits too (submit order).
    pub async fn admit_flow(
        &self,
        job: &NewJob,
        options: &MessageOptions,
        gates: &[Gate],
        worker: &str,
    ) -> Result<Admission, StoreError> {
        let mut gates = gates.to_vec();
        gates.sort_by(|a, b| a.name.cmp(&b.name));
        gates.dedup_by(|a, b| a.name == b.name);
        let admitting = Admitting {
            job: job.clone(),
            options: options.clone(),
            gates,
            worker: worker.to_string(),
            now_ms: now_ms(),
        };
        on_backend!(self, b => b.admit_flow(&admitting).await)
    }

    /// The gates jobs of `queue` are held at (and not yet granted).
    pub async fn held_gates(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        on_backend!(self, b => b.held_gates(queue).await)
    }

    /// Grants the jobs of `queue` held at `gate` the places it has free now, at most `limit`:
    /// highest priority first, then submit order. Each granted job's place is taken and the
    /// job claimed for `owner` until `until_ms` (the lease columns), in one transaction that
    /// locks the gate's row. The claimer publishes each again (in the order returned) and
    /// records it with [`Store::requeued`]; should it die first, its claim lapses and a lease
    /// reaper publishes the job, which then passes the gate with the place it holds.
    pub async fn release_held(
        &self,
        gate: &str,
        queue: &str,
        owner: &str,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let claim = Claim {
            owner: owner.to_string(),
            now_ms: now_ms(),
            until_ms,
        };
        let mut rows =
            on_backend!(self, b => b.release_held(gate, queue, &claim, limit.max(1)).await)?;
        rows.sort_by(|a, b| {
            (b.job.options.priority.cmp(&a.job.options.priority))
                .then(a.job.submitted_ms.cmp(&b.job.submitted_ms))
                .then(a.job.id.cmp(&b.job.id))
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_allows_one_start_per_interval_and_banks_none() {
        // Idle: the starts of one interval's catch-up (100 ms at 10/s: two), then on the grid.
        assert_eq!(rate_starts(0.0, 100.0, 10_000.0, 10), (2, 10_100.0));
        assert_eq!(take_rate(10_100.0, 100.0, 10_099.0), None);
        assert_eq!(take_rate(10_100.0, 100.0, 10_100.0), Some(10_200.0));
        // A poll 250 ms late grants the last 100 ms' starts, not all 250 ms' (no bank).
        assert_eq!(rate_starts(10_000.0, 100.0, 10_250.0, 10), (2, 10_350.0));
        // 50/s: a poll every 100 ms finds its five (or six, at the edge) due.
        assert_eq!(rate_starts(10_000.0, 20.0, 10_100.0, 100), (6, 10_120.0));
        assert_eq!(rate_starts(10_120.0, 20.0, 10_200.0, 100), (5, 10_220.0));
        // `most` caps the starts, and the next start moves by those alone.
        assert_eq!(rate_starts(10_000.0, 100.0, 10_250.0, 1), (1, 10_250.0));
    }

    #[test]
    fn a_rate_grants_a_polls_worth_ahead_of_its_starts() {
        assert_eq!(grants_allowed(1000.0 / 6.0, 0), 1);
        assert_eq!(grants_allowed(1000.0 / 6.0, 1), 0);
        assert_eq!(grants_allowed(10.0, 3), 7);
        assert_eq!(grants_allowed(10.0, 12), 0);
    }
}

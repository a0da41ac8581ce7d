//! Revokes reach every worker through the store (`cm jobs revoke`, `POST /api/jobs/ID/revoke`):
//! one poller per worker process reads the new ones every second into an in-memory set, which
//! each delivery's admission checks (`delivery::admit`: a revoked job ends REVOKED, never run);
//! a revoke with terminate also asks the job to end if it runs here. The first read, before consuming,
//! takes every revoke ever kept, so a revoke holds across restarts of the workers.
//!
//! A job delivered within the poll interval after its revoke may still start: then only a
//! terminate ends it (Celery's workers have the same window, through the broker).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::jobs::cancel::{signal_named, Stops};
use crate::store::{self, Revoke, Store};

/// How often the store is asked for new revokes.
const POLL: Duration = Duration::from_secs(1);
/// Revoke times are their makers' clocks, committed in any order: each poll asks from this much
/// before the newest seen, and skips what it already knows.
const OVERLAP_MS: i64 = 5_000;
/// Revoked ids kept in memory, at most; past it the oldest revokes are forgotten (about 10 MB).
const KEEP: usize = 100_000;

/// The revoked ids this worker knows, shared by the poller and every delivery.
#[derive(Clone, Default)]
pub(super) struct Revocations {
    known: Arc<Mutex<Known>>,
}

#[derive(Default)]
struct Known {
    by_id: HashMap<Arc<str>, Seen>,
    /// (time, id), oldest first: what goes when there are more than [`KEEP`].
    oldest: BTreeSet<(i64, Arc<str>)>,
    /// The newest revoke time read, for the next poll.
    newest: i64,
}

struct Seen {
    at_ms: i64,
    terminate: bool,
    by: Option<String>,
}

/// What one read of the store brought: the revokes with terminate new to this worker, and the
/// ids forgotten to stay within [`KEEP`].
#[derive(Debug, Default, PartialEq)]
struct Taken {
    terminate: Vec<Revoke>,
    forgotten: Vec<Arc<str>>,
}

impl Revocations {
    /// Who revoked job `id` (`""` if the store does not say), or `None` if it is not revoked.
    pub(super) fn revoked_by(&self, id: &str) -> Option<String> {
        let known = self.lock();
        known
            .by_id
            .get(id)
            .map(|seen| seen.by.clone().unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // A panic elsewhere while holding it leaves a set that is still a valid set.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cursor(&self) -> i64 {
        let newest = self.lock().newest;
        if newest == 0 {
            0
        } else {
            newest - OVERLAP_MS
        }
    }

    /// Takes in what the store returned (oldest first).
    fn take(&self, revokes: Vec<Revoke>) -> Taken {
        let mut known = self.lock();
        let mut taken = Taken::default();
        for r in revokes {
            known.newest = known.newest.max(r.at_ms);
            if known.insert(&r) && r.terminate {
                taken.terminate.push(r);
            }
        }
        taken.forgotten = known.trim();
        taken
    }

    /// Takes in a revoke this worker made itself (over Celery's remote control), at once rather
    /// than at the next poll. The poll's cursor stays: it is the store's clock, not ours.
    /// Returns whether it was new to this worker (or an upgrade to terminate).
    pub(super) fn note(&self, r: &Revoke) -> bool {
        // Past KEEP, the next poll's `take` forgets the oldest (and their stops).
        self.lock().insert(r)
    }

    /// Every revoked id this worker knows, oldest revoke first (`celery inspect revoked`).
    pub(super) fn ids(&self) -> Vec<String> {
        let known = self.lock();
        known.oldest.iter().map(|(_, id)| id.to_string()).collect()
    }
}

impl Known {
    /// Takes in one revoke; returns whether it is new (or an upgrade to terminate).
    fn insert(&mut self, r: &Revoke) -> bool {
        let id: Arc<str> = Arc::from(r.id.as_str());
        let old = self.by_id.get(&id).map(|s| (s.at_ms, s.terminate));
        match old {
            // Read again through the overlap, or a repeat that adds nothing.
            Some((_, was_terminate)) if was_terminate || !r.terminate => return false,
            // An upgrade to terminate: it moves to its new time.
            Some((at, _)) => {
                self.oldest.remove(&(at, id.clone()));
            }
            None => {}
        }
        self.oldest.insert((r.at_ms, id.clone()));
        self.by_id.insert(
            id,
            Seen {
                at_ms: r.at_ms,
                terminate: r.terminate,
                by: r.by.clone(),
            },
        );
        true
    }

    /// Forgets the oldest revokes past [`KEEP`]; returns their ids.
    fn trim(&mut self) -> Vec<Arc<str>> {
        let mut forgotten = Vec::new();
        while self.by_id.len() > KEEP {
            let Some((_, id)) = self.oldest.pop_first() else {
                break;
            };
            self.by_id.remove(&id);
            forgotten.push(id);
        }
        forgotten
    }
}

/// Revokes asked of this worker over Celery's remote control (`celery control revoke`,
/// Flower's buttons): kept in the store for every worker the one way `cm jobs revoke` keeps
/// them (`crate::client::revoke`), and taken in here at once, so this worker neither starts the job
/// nor waits for its next poll to terminate it.
pub(super) struct Revoker {
    pub(super) store: Store,
    pub(super) revoked: Revocations,
    pub(super) stops: Stops,
    /// Who the store says revoked (this worker, for a remote-control client).
    pub(super) by: String,
}

impl Revoker {
    /// Revokes `ids` (terminating with `signal`, SIGTERM by default); one report per distinct
    /// id. Nothing is taken in here unless the store kept it: a client never hears of a revoke
    /// that the other workers will not see.
    pub(super) async fn revoke(
        &self,
        ids: &[String],
        terminate: bool,
        signal: Option<Signal>,
    ) -> Result<Vec<crate::client::revoke::Report>, store::StoreError> {
        let signal = terminate.then(|| signal.unwrap_or(Signal::SIGTERM));
        let name = signal.map(Signal::as_str);
        let reports =
            crate::client::revoke::revoke(&self.store, ids, terminate, name, &self.by).await?;
        let at_ms = store::now_ms();
        for report in &reports {
            self.revoked.note(&Revoke {
                id: report.id.clone(),
                at_ms,
                terminate,
                signal: name.map(str::to_string),
                by: Some(self.by.clone()),
            });
            if let Some(signal) = signal {
                // Harmless for a job not running here, as for the poller's.
                self.stops.terminate(&report.id, signal);
            }
        }
        Ok(reports)
    }
}

/// The first read: the newest [`KEEP`] revokes kept, before this worker consumes (so none of
/// its jobs runs yet).
pub(super) async fn load(store: &Store) -> anyhow::Result<Revocations> {
    let revoked = Revocations::default();
    let newest = store.revokes_since(0, KEEP).await?;
    let n = newest.len();
    revoked.take(newest);
    if n > 0 {
        info!(
            "{n} revoked job id(s) in the store; those jobs will not run here{}",
            if n >= KEEP {
                format!(" (the newest {KEEP}; older revokes stay in the store only)")
            } else {
                String::new()
            }
        );
    }
    Ok(revoked)
}

/// Polls the store every second for as long as the worker lives (across broker sessions).
pub(super) fn spawn(revoked: Revocations, store: Store, stops: Stops) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let read = match store.revokes_since(revoked.cursor(), KEEP).await {
                Ok(r) => r,
                Err(e) => {
                    if !failing {
                        warn!("reading revokes from the store: {e}; trying again every {POLL:?}");
                    }
                    failing = true;
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                info!("reading revokes from the store again");
            }
            let taken = revoked.take(read);
            for r in &taken.terminate {
                // Harmless for a job not running here; forgotten below with the id.
                stops.terminate(&r.id, signal_of(r));
            }
            for id in &taken.forgotten {
                stops.forget(id);
            }
        }
    })
}

/// The signal a revoke asks for: SIGTERM unless it names another.
fn signal_of(r: &Revoke) -> Signal {
    match r.signal.as_deref().map(signal_named) {
        None => Signal::SIGTERM,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            warn!("revoke of job {}: {e}; sending TERM", r.id);
            Signal::SIGTERM
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(id: &str, at_ms: i64, terminate: bool) -> Revoke {
        Revoke {
            id: id.into(),
            at_ms,
            terminate,
            signal: terminate.then(|| "SIGKILL".into()),
            by: Some("cm@ops".into()),
        }
    }

    #[test]
    fn a_revoke_is_taken_once_and_an_upgrade_to_terminate_again() {
        let r = Revocations::default();
        assert_eq!(r.cursor(), 0);
        assert_eq!(r.revoked_by("a"), None);
        let taken = r.take(vec![revoke("a", 10_000, false), revoke("b", 20_000, true)]);
        assert_eq!(taken.terminate, [revoke("b", 20_000, true)]);
        assert_eq!(r.revoked_by("a").as_deref(), Some("cm@ops"));
        assert_eq!(r.cursor(), 20_000 - OVERLAP_MS);
        // Read again through the overlap: nothing new.
        let again = r.take(vec![revoke("a", 10_000, false), revoke("b", 20_000, true)]);
        assert_eq!(again, Taken::default());
        // A's upgrade to terminate is new; a repeat of B without terminate is not.
        let up = r.take(vec![revoke("b", 20_500, false), revoke("a", 21_000, true)]);
        assert_eq!(up.terminate, [revoke("a", 21_000, true)]);
        assert_eq!(r.cursor(), 21_000 - OVERLAP_MS);
    }

    #[test]
    fn a_revoke_noted_here_is_known_at_once_and_not_announced_again_by_the_poll() {
        let r = Revocations::default();
        r.take(vec![revoke("old", 1_000, false)]);
        assert!(r.note(&revoke("mine", 50_000, true)));
        assert!(
            !r.note(&revoke("mine", 50_001, true)),
            "a repeat adds nothing"
        );
        assert!(r.revoked_by("mine").is_some());
        assert_eq!(r.cursor(), 1_000 - OVERLAP_MS, "the store's cursor stays");
        assert_eq!(r.ids(), ["old", "mine"], "oldest first");
        // The poll reads the same revoke from the store: its terminate was already asked.
        let taken = r.take(vec![revoke("mine", 50_002, true)]);
        assert!(taken.terminate.is_empty(), "{taken:?}");
    }

    #[test]
    fn past_the_cap_the_oldest_revokes_are_forgotten() {
        let r = Revocations::default();
        let many: Vec<Revoke> = (0..=KEEP)
            .map(|i| revoke(&format!("j{i}"), i64::try_from(i).unwrap_or(0) + 1, false))
            .collect();
        let taken = r.take(many);
        assert_eq!(taken.forgotten, [Arc::from("j0")]);
        assert_eq!(r.revoked_by("j0"), None);
        assert!(r.revoked_by("j1").is_some());
        assert!(r.revoked_by(&format!("j{KEEP}")).is_some());
    }

    #[test]
    fn a_revoke_names_its_signal_or_gets_term() {
        let mut r = revoke("a", 1, true);
        assert_eq!(signal_of(&r), Signal::SIGKILL);
        r.signal = None;
        assert_eq!(signal_of(&r), Signal::SIGTERM);
        r.signal = Some("SIGSTOP".into());
        assert_eq!(signal_of(&r), Signal::SIGTERM);
    }
}

//! The jobs a worker runs right now, and how many of each task it started: what `celery
//! inspect active` and `stats` show and the heartbeat counts. A job is in from the moment it
//! starts until it ran (the guard's drop), whatever way its handler leaves.
//!
//! On the hot path: one lock to enter, one to leave, nothing copied but a pointer to the
//! message; the lists are built only when someone asks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lapin::message::Delivery;
use lapin::types::ShortString;
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use crate::celery::message::TaskMessage;
use crate::celery::replies::{DeliveryInfo, TaskInfo};

/// One running job.
pub(super) struct RunningJob {
    pub(super) msg: Arc<TaskMessage>,
    /// Epoch seconds.
    pub(super) started: f64,
    pub(super) exchange: ShortString,
    pub(super) routing_key: ShortString,
    pub(super) priority: u8,
    pub(super) redelivered: bool,
}

impl RunningJob {
    /// `msg` as `delivery` brought it, in the registry since `at_ms` (ms since the epoch).
    pub(super) fn of(msg: Arc<TaskMessage>, delivery: &Delivery, at_ms: i64) -> Self {
        Self {
            msg,
            started: at_ms as f64 / 1000.0,
            exchange: delivery.exchange.clone(),
            routing_key: delivery.routing_key.clone(),
            priority: delivery.properties.priority().unwrap_or(0),
            redelivered: delivery.redelivered,
        }
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    jobs: FxHashMap<u64, RunningJob>,
    /// Jobs held prefetched, unstarted, and recorded so in the store (`inspect reserved`);
    /// `started` is when they were recorded.
    reserved: FxHashMap<u64, RunningJob>,
    total: FxHashMap<String, u64>,
    processed: u64,
}

#[derive(Default)]
pub(super) struct Running {
    inner: Mutex<Inner>,
}

/// Removes its job from the registry when dropped.
pub(super) struct Guard<'a> {
    running: &'a Running,
    key: u64,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.running.lock().jobs.remove(&self.key);
    }
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves counts that are still good to show.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The job starts: it shows as active and counts for its task until the guard goes.
    pub(super) fn start(&self, job: RunningJob) -> Guard<'_> {
        let mut inner = self.lock();
        inner.processed += 1;
        match inner.total.get_mut(job.msg.task.as_str()) {
            Some(n) => *n += 1,
            None => {
                inner.total.insert(job.msg.task.clone(), 1);
            }
        }
        let key = inner.next;
        inner.next += 1;
        inner.jobs.insert(key, job);
        Guard { running: self, key }
    }

    /// A job held unstarted (recorded as held in the store): listed by `inspect reserved` until
    /// [`Running::unreserve`] with the key returned.
    pub(super) fn reserve(&self, job: RunningJob) -> u64 {
        let mut inner = self.lock();
        let key = inner.next;
        inner.next += 1;
        inner.reserved.insert(key, job);
        key
    }

    /// The held job of `key` starts, or goes back to the queue.
    pub(super) fn unreserve(&self, key: u64) {
        self.lock().reserved.remove(&key);
    }

    /// Jobs running now.
    pub(super) fn active(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Which of `ids` run here now, in their order (whom a terminate reaches on this worker).
    pub(super) fn running_of(&self, ids: &[String]) -> Vec<String> {
        let inner = self.lock();
        ids.iter()
            .filter(|id| inner.jobs.values().any(|job| job.msg.id == **id))
            .cloned()
            .collect()
    }

    /// The ids of the jobs running now (whom a `pause --terminate` stops).
    pub(super) fn ids(&self) -> Vec<String> {
        self.lock()
            .jobs
            .values()
            .map(|job| job.msg.id.clone())
            .collect()
    }

    /// Jobs started since the worker started.
    pub(super) fn processed(&self) -> u64 {
        self.lock().processed
    }

    /// Jobs started per task name (`stats` → `total`).
    pub(super) fn totals(&self) -> Map<String, Value> {
        let inner = self.lock();
        let mut names: Vec<(&String, &u64)> = inner.total.iter().collect();
        names.sort();
        names
            .into_iter()
            .map(|(name, n)| (name.clone(), Value::from(*n)))
            .collect()
    }

    /// `inspect active`, oldest first. `safe`: args and kwargs as their repr text, as Celery
    /// gives them to Flower.
    pub(super) fn list(&self, node: &str, pid: u32, safe: bool) -> Vec<TaskInfo> {
        list(&self.lock().jobs, node, pid, safe)
    }

    /// `inspect reserved`: the jobs held unstarted, oldest first, as [`Running::list`] shows.
    pub(super) fn reserved(&self, node: &str, pid: u32, safe: bool) -> Vec<TaskInfo> {
        list(&self.lock().reserved, node, pid, safe)
    }
}

/// The jobs of `jobs`, oldest first, as `inspect active` and `reserved` show them.
fn list(jobs: &FxHashMap<u64, RunningJob>, node: &str, pid: u32, safe: bool) -> Vec<TaskInfo> {
    let mut keys: Vec<&u64> = jobs.keys().collect();
    keys.sort();
    keys.into_iter()
        .filter_map(|k| jobs.get(k))
        .map(|job| {
            let msg = &job.msg;
            let (args, kwargs) = if safe {
                // Python's reprs, as cm and Celery's clients put them in argsrepr and
                // kwargsrepr.
                (
                    Value::String(crate::celery::pyrepr::py_repr_list(&msg.args)),
                    Value::String(crate::celery::pyrepr::py_repr_map(&msg.kwargs)),
                )
            } else {
                (
                    Value::Array(msg.args.clone()),
                    Value::Object(msg.kwargs.clone()),
                )
            };
            TaskInfo {
                id: msg.id.clone(),
                name: msg.task.clone(),
                args,
                kwargs,
                kind: msg.task.clone(),
                hostname: node.to_string(),
                time_start: job.started,
                // cm acks a job once its final state is stored: never while it runs.
                acknowledged: false,
                delivery_info: DeliveryInfo {
                    exchange: job.exchange.to_string(),
                    routing_key: job.routing_key.to_string(),
                    priority: job.priority,
                    redelivered: job.redelivered,
                },
                worker_pid: pid,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(task: &str, started: f64) -> RunningJob {
        RunningJob {
            msg: Arc::new(TaskMessage::new(task, vec![json!("h1")], Map::new())),
            started,
            exchange: "".into(),
            routing_key: "launcher".into(),
            priority: 0,
            redelivered: false,
        }
    }

    #[test]
    fn a_job_is_active_while_its_guard_lives_and_counts_for_good() {
        let r = Running::default();
        let a = r.start(job("cm.launch", 1.0));
        let b = r.start(job("cm.provision", 2.0));
        let c = r.start(job("cm.launch", 3.0));
        assert_eq!(r.active(), 3);
        let listed = r.list("l1@h", 7, false);
        assert_eq!(
            listed.iter().map(|t| t.time_start).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0],
            "oldest first"
        );
        assert_eq!(listed[0].args, json!(["h1"]));
        assert_eq!(listed[0].delivery_info.routing_key, "launcher");
        assert_eq!(r.list("l1@h", 7, true)[0].args, json!("['h1']"));
        let first = listed[0].id.clone();
        assert_eq!(r.running_of(&[first.clone(), "not-here".into()]), [first]);
        drop(b);
        drop(a);
        assert_eq!(r.active(), 1);
        drop(c);
        assert_eq!(r.active(), 0);
        assert_eq!(r.processed(), 3);
        assert_eq!(
            Value::Object(r.totals()),
            json!({"cm.launch": 2, "cm.provision": 1})
        );
    }
}

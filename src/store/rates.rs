//! Operators' rate limits (issue 31): `celery control rate_limit TASK 10/m` and
//! `cm tasks rate TASK 10/m|off|config` keep a row here that is in force over the `rate_limit`
//! any worker's config gives the task, on every host sharing the store and across restarts.
//!
//! Each admission and release at a task's rate gate reads the row after it has locked the
//! gate's row (`sqlite/flow.rs`, `postgres/flow.rs`), so a worker's config never overwrites
//! it. Setting one is one statement; going back to the config is one transaction (the row
//! deleted, the gate's rule made the config's). Workers learn which tasks have a row by the
//! half-second poll that reads pause orders (`worker::flow`), so a task with no configured
//! rate is consulted at its gate from then on, and others pay no store round trip.

use serde::Serialize;

use super::{now_ms, Backend, Store, StoreError};

/// An operator's rate for one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateOverride {
    pub task: String,
    /// The time between two starts; 0: no limit at all.
    pub interval_ms: f64,
    /// As given ("10/m"), or "off".
    pub rate: String,
    pub set_by: String,
    pub set_ms: i64,
}

impl RateOverride {
    pub fn is_off(&self) -> bool {
        self.interval_ms <= 0.0
    }
}

/// What the override's row says, as a held job's reason reads it.
pub fn reason(task: &str, rate: &str) -> String {
    format!("rate limit {rate} of {task} (set by an operator)")
}

/// The name of a task's rate gate (as `flow_gates` and `jobs.flow_key` name it).
pub fn gate_of(task: &str) -> String {
    format!("rate:{task}")
}

/// The task a rate gate is for.
pub(super) fn task_of(gate: &str) -> &str {
    gate.strip_prefix("rate:").unwrap_or(gate)
}

impl Store {
    /// Puts `task`'s rate at `rate` (`interval_ms` 0 for no limit, whatever the config says),
    /// in one statement.
    pub async fn set_rate_override(
        &self,
        task: &str,
        interval_ms: f64,
        rate: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let row = RateOverride {
            task: task.to_string(),
            interval_ms: interval_ms.max(0.0),
            rate: rate.to_string(),
            set_by: by.to_string(),
            set_ms: now_ms(),
        };
        on_backend!(self, b => b.set_rate_override(&row).await)
    }

    /// Gives `task` back the config's rate: its row deleted, and its gate's rule made
    /// `configured_ms` (0: the config sets none, so jobs held at it are released at once), in
    /// one transaction. Whether there was a row.
    pub async fn clear_rate_override(
        &self,
        task: &str,
        configured_ms: f64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, b => b.clear_rate_override(&gate_of(task), configured_ms.max(0.0)).await)
    }

    /// Every operator's rate, by task.
    pub async fn rate_overrides(&self) -> Result<Vec<RateOverride>, StoreError> {
        on_backend!(self, b => b.rate_overrides().await)
    }
}

//! Operators' rate limits as this worker knows them (`store::rates`): read with the pause
//! orders every half second, so that a task with no configured `rate_limit` passes its rate
//! gate in the store once an operator limits it, while a task with neither costs no round trip
//! (a look at an atomic flag). The store decides at the gate: this copy only says whether to
//! ask it, and what a newcomer's reason reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::store::rates::RateOverride;

#[derive(Default)]
pub(in crate::worker) struct KnownRates {
    any: AtomicBool,
    by_task: RwLock<HashMap<String, RateOverride>>,
}

impl KnownRates {
    /// Whether any task has an operator's rate.
    pub(in crate::worker) fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// `task`'s operator's rate, if it has one.
    pub(in crate::worker) fn of(&self, task: &str) -> Option<RateOverride> {
        if !self.any() {
            return None;
        }
        let map = self.by_task.read().unwrap_or_else(PoisonError::into_inner);
        map.get(task).cloned()
    }

    /// Replaces what is known with the store's rows.
    pub(super) fn set(&self, rows: Vec<RateOverride>) {
        let mut map = self.by_task.write().unwrap_or_else(PoisonError::into_inner);
        *map = rows.into_iter().map(|r| (r.task.clone(), r)).collect();
        self.any.store(!map.is_empty(), Ordering::Relaxed);
    }
}

//! What operators ordered a queue's workers to do, kept for every host and across restarts:
//! pause (stop taking jobs), resume, and a concurrency other than the config's (issue 31).
//!
//! One row per queue and [`Scope`]; a column left NULL defers to the wider scope, then to the
//! config. An order at a wide scope clears the narrower rows' same column in its transaction,
//! so the last order wins wherever it reaches: `cm queue resume Q` resumes every worker of Q,
//! whatever `--host` or `celery control cancel_consumer` said before. Workers read their
//! queue's rows each half second and resolve them with [`desired`].

use serde::Serialize;

use super::{now_ms, Backend, Store, StoreError};

/// Whom an order reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every worker of the queue, on every host.
    Everywhere,
    /// The queue's workers on one host (the config's `node_host`, as node names end).
    Host(String),
    /// One worker, by node name (`name@host`): what Celery's pidbox methods reach.
    Worker(String),
}

impl Scope {
    /// The row's key: '' for every host, the host, or the node name.
    pub fn key(&self) -> &str {
        match self {
            Scope::Everywhere => "",
            Scope::Host(h) | Scope::Worker(h) => h,
        }
    }

    /// How people read it.
    pub fn describe(&self) -> String {
        match self {
            Scope::Everywhere => "on every host".into(),
            Scope::Host(h) => format!("on host {h}"),
            Scope::Worker(n) => format!("on worker {n}"),
        }
    }
}

/// One order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop taking jobs; with `terminate`, also stop the running ones (they go back to the queue).
    Pause {
        terminate: bool,
    },
    Resume,
    /// Run this many jobs at once.
    Scale(u16),
}

/// One row of `queue_controls`, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlRow {
    pub queue: String,
    /// '' (every host), a host, or a node name.
    pub scope: String,
    pub paused: Option<bool>,
    pub concurrency: Option<u16>,
    pub terminate_ms: Option<i64>,
    pub changed_ms: i64,
    pub changed_by: String,
}

/// What a worker is asked to do, resolved from its queue's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub paused: bool,
    /// `None`: the config's.
    pub concurrency: Option<u16>,
    /// The newest `pause --terminate` that reaches it.
    pub terminate_ms: Option<i64>,
}

/// Resolves `rows` (of one queue) for the worker `node` on `host`: per column, its own row,
/// else its host's, else every host's.
pub fn desired(rows: &[ControlRow], host: &str, node: &str) -> Desired {
    let row = |key: &str| rows.iter().find(|r| r.scope == key);
    // Narrowest first.
    let chain: Vec<&ControlRow> = [row(node), row(host), row("")]
        .into_iter()
        .flatten()
        .collect();
    Desired {
        paused: chain.iter().find_map(|r| r.paused).unwrap_or(false),
        concurrency: chain.iter().find_map(|r| r.concurrency),
        terminate_ms: chain.iter().filter_map(|r| r.terminate_ms).max(),
    }
}

impl Store {
    /// Stores `control` for `queue` at `scope`, by `by` (who asked, for the row), in one
    /// transaction that also clears what narrower scopes said of the same thing.
    pub async fn set_control(
        &self,
        queue: &str,
        scope: &Scope,
        control: Control,
        by: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        on_backend!(self, b => b.set_control(queue, scope, control, by, now).await)
    }

    /// The rows of `queue`, or of every queue; by queue then scope.
    pub async fn controls(&self, queue: Option<&str>) -> Result<Vec<ControlRow>, StoreError> {
        on_backend!(self, b => b.controls(queue).await)
    }
}

/// The columns an order sets: (paused, concurrency, terminate_ms).
pub(super) fn columns(control: Control, now: i64) -> (Option<bool>, Option<u16>, Option<i64>) {
    match control {
        Control::Pause { terminate } => (Some(true), None, terminate.then_some(now)),
        Control::Resume => (Some(false), None, None),
        Control::Scale(n) => (None, Some(n), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scope: &str, paused: Option<bool>, concurrency: Option<u16>) -> ControlRow {
        ControlRow {
            queue: "q".into(),
            scope: scope.into(),
            paused,
            concurrency,
            terminate_ms: None,
            changed_ms: 0,
            changed_by: "test".into(),
        }
    }

    #[test]
    fn the_narrowest_row_that_says_wins_per_column() {
        assert_eq!(desired(&[], "h", "w1@h"), Desired::default());
        let rows = [
            row("", Some(true), Some(2)),
            row("h", Some(false), None),
            row("w1@h", None, Some(8)),
            row("w1@other", Some(true), Some(1)),
        ];
        let d = desired(&rows, "h", "w1@h");
        assert!(!d.paused, "its host's resume beats every host's pause");
        assert_eq!(d.concurrency, Some(8), "its own row's scale");
        let d = desired(&rows, "h", "w2@h");
        assert_eq!((d.paused, d.concurrency), (false, Some(2)));
        let d = desired(&rows, "other", "w2@other");
        assert_eq!((d.paused, d.concurrency), (true, Some(2)));
    }

    #[test]
    fn a_terminate_is_the_newest_that_reaches() {
        let mut everywhere = row("", Some(true), None);
        everywhere.terminate_ms = Some(5);
        let mut mine = row("w1@h", None, None);
        mine.terminate_ms = Some(9);
        assert_eq!(
            desired(&[everywhere.clone(), mine], "h", "w1@h").terminate_ms,
            Some(9)
        );
        assert_eq!(desired(&[everywhere], "h", "w2@h").terminate_ms, Some(5));
    }
}

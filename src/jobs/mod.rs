//! The job kinds: task name → arguments → the simulated steps a worker walks through.

pub mod launch;
pub mod provision;

use serde_json::Value;

use crate::config::Config;
use crate::protocol::TaskMessage;
use crate::store::NewJob;

pub const PROVISION: &str = "cm.provision";
pub const LAUNCH: &str = "cm.launch";

/// Why a message is not a runnable job; such messages go to the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("unknown task {0:?} (cm workers run cm.provision and cm.launch)")]
    UnknownTask(String),
    #[error("bad arguments for {task}: {why}")]
    BadArgs { task: &'static str, why: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Provision(provision::Provision),
    Launch(launch::Launch),
}

impl Job {
    pub fn from_message(msg: &TaskMessage) -> Result<Self, JobError> {
        match msg.task.as_str() {
            PROVISION => provision::Provision::from_message(msg).map(Job::Provision),
            LAUNCH => launch::Launch::from_message(msg).map(Job::Launch),
            other => Err(JobError::UnknownTask(other.to_string())),
        }
    }

    /// The intermediate states, in order, between STARTED and SUCCESS.
    pub fn steps(&self) -> &'static [&'static str] {
        match self {
            Job::Provision(_) => provision::STEPS,
            Job::Launch(_) => launch::STEPS,
        }
    }

    /// `key=value` words for the log line.
    pub fn describe(&self) -> String {
        match self {
            Job::Provision(p) => format!("host={} image={}", p.host, p.image),
            Job::Launch(l) => format!(
                "server={} recipe={:?} kind={} hosts={}",
                l.server, l.recipe, l.kind, l.hosts
            ),
        }
    }

    /// Checked before the first step: what this job asks for that the config cannot give.
    pub fn refusal(&self, cfg: &Config) -> Option<String> {
        match self {
            Job::Provision(_) => None,
            Job::Launch(l) => l.refusal(cfg),
        }
    }

    /// A simulated failure planned for `step`, if any (a recipe marked `fail = true`).
    pub fn fails_at(&self, cfg: &Config, step: &str) -> Option<String> {
        match self {
            Job::Provision(_) => None,
            Job::Launch(l) => l.fails_at(cfg, step),
        }
    }

    /// What SUCCESS returns (to the store and rpc:// clients).
    pub fn result(&self) -> Value {
        match self {
            Job::Provision(p) => {
                serde_json::json!({"host": p.host, "image": p.image, "state": "AVAILABLE"})
            }
            Job::Launch(l) => serde_json::json!({
                "server": l.server, "recipe": l.recipe, "kind": l.kind, "hosts": l.hosts, "state": "active"
            }),
        }
    }
}

/// The store record of a message routed to `queue`; a job's own fields are filled in where the
/// message is a runnable job.
pub fn new_job(msg: &TaskMessage, queue: &str, batch: Option<String>, now_ms: i64) -> NewJob {
    // `[args, kwargs]`, serialized from references: no deep copy of the message's values.
    let args = serde_json::to_string(&(&msg.args, &msg.kwargs)).unwrap_or_default();
    let mut record = NewJob {
        id: msg.id.clone(),
        task: msg.task.clone(),
        queue: queue.to_string(),
        args,
        batch,
        submitted_ms: now_ms,
        ..NewJob::default()
    };
    match Job::from_message(msg) {
        Ok(Job::Launch(l)) => {
            record.server = Some(l.server);
            record.recipe = Some(l.recipe);
            record.kind = Some(l.kind);
            record.hosts = Some(l.hosts);
        }
        Ok(Job::Provision(p)) => {
            record.hosts = Some(p.host);
        }
        Err(_) => {}
    }
    record
}

/// A string argument, positional or by keyword (Celery clients use either).
pub(crate) fn arg_str(
    msg: &TaskMessage,
    task: &'static str,
    pos: usize,
    key: &str,
) -> Result<Option<String>, JobError> {
    let value = msg.kwargs.get(key).or_else(|| msg.args.get(pos));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(JobError::BadArgs {
            task,
            why: format!("{key} must be a string, got {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    #[test]
    fn tasks_map_to_kinds_and_unknown_is_refused() {
        let msg = TaskMessage::new(PROVISION, vec![json!("i1"), json!("ubuntu")], Map::new());
        let job = Job::from_message(&msg);
        assert!(matches!(&job, Ok(Job::Provision(p)) if p.host == "i1" && p.image == "ubuntu"));
        let msg = TaskMessage::new("cm.nope", vec![], Map::new());
        assert_eq!(
            Job::from_message(&msg),
            Err(JobError::UnknownTask("cm.nope".into()))
        );
        let msg = TaskMessage::new(PROVISION, vec![json!(["x"])], Map::new());
        assert!(matches!(
            Job::from_message(&msg),
            Err(JobError::BadArgs { .. })
        ));
    }
}

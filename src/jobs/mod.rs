//! The job kinds: task name → arguments → the simulated steps a worker walks through
//! (`run.rs` walks them).

pub mod args;
pub mod argv;
pub mod launch;
pub mod provision;
mod run;

use serde_json::Value;

use crate::config::Config;
use crate::protocol::TaskMessage;
use crate::store::NewJob;

pub const PROVISION: &str = "cm.provision";
pub const LAUNCH: &str = "cm.launch";
/// Every task a worker runs (`celery inspect registered`).
pub const TASKS: &[&str] = &[LAUNCH, PROVISION];

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

    /// What SUCCESS returns (to the store and rpc:// clients), as JSON text. Serialised from
    /// borrowed fields, keys in the order a `json!` object has always given them (sorted): a
    /// `json!` value built, printed and dropped was 10 allocations and 3% of a worker's work.
    pub fn result_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Provisioned<'a> {
            host: &'a str,
            image: &'a str,
            state: &'static str,
        }
        #[derive(serde::Serialize)]
        struct Launched<'a> {
            hosts: &'a str,
            kind: &'a str,
            recipe: &'a str,
            server: &'a str,
            state: &'static str,
        }
        let text = match self {
            Job::Provision(p) => serde_json::to_string(&Provisioned {
                host: &p.host,
                image: &p.image,
                state: "AVAILABLE",
            }),
            Job::Launch(l) => serde_json::to_string(&Launched {
                hosts: &l.hosts,
                kind: &l.kind,
                recipe: &l.recipe,
                server: &l.server,
                state: "active",
            }),
        };
        // Structs of strings always serialise.
        text.unwrap_or_default()
    }
}

/// The store record of a message routed to `queue`; a job's own fields are filled in where the
/// message is a runnable job.
pub fn new_job(msg: &TaskMessage, queue: &str, batch: Option<String>, now_ms: i64) -> NewJob {
    record(
        msg,
        Job::from_message(msg).ok().as_ref(),
        queue,
        batch,
        now_ms,
    )
}

/// [`new_job`] for a message already read as `job` (the worker has it: no second reading).
pub fn record(
    msg: &TaskMessage,
    job: Option<&Job>,
    queue: &str,
    batch: Option<String>,
    now_ms: i64,
) -> NewJob {
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
    match job {
        Some(Job::Launch(l)) => {
            record.server = Some(l.server.clone());
            record.recipe = Some(l.recipe.clone());
            record.kind = Some(l.kind.clone());
            record.hosts = Some(l.hosts.clone());
        }
        Some(Job::Provision(p)) => {
            record.hosts = Some(p.host.clone());
        }
        None => {}
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
    fn results_are_the_json_objects_they_always_were() {
        let msg = TaskMessage::new(PROVISION, vec![json!("i1"), json!("ubuntu")], Map::new());
        let job = Job::from_message(&msg).expect("provision");
        let want = json!({"host": "i1", "image": "ubuntu", "state": "AVAILABLE"});
        assert_eq!(job.result_json(), want.to_string());
        let launch = launch::Launch {
            server: "s \"1\"".into(),
            recipe: "Hadoop".into(),
            kind: "vm".into(),
            hosts: "i[1-3]".into(),
            user: None,
        };
        let want = json!({
            "server": launch.server, "recipe": "Hadoop", "kind": "vm", "hosts": "i[1-3]", "state": "active"
        });
        assert_eq!(Job::Launch(launch).result_json(), want.to_string());
    }

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

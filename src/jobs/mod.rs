//! The job kinds: task name → arguments → what runs. cm's own tasks (`cm.launch`,
//! `cm.provision`) walk simulated steps, or run the recipe's / `[provision]` command when the
//! config has one; a `[tasks."NAME"]` task runs its command.
//!
//! A message's arguments are bound to the task's parameters as Python binds a call
//! ([`args`]); arguments that do not fit make a job that ends FAILURE naming the mismatch, and
//! nothing runs. Only a task cm does not know is refused outright (to the dead letters).

pub mod args;
pub mod argv;
pub mod cancel;
pub mod command;
pub mod launch;
pub mod provision;
pub mod run;

use std::sync::Arc;

use crate::celery::message::TaskMessage;
use crate::config::policy::TaskPolicy;
use crate::config::{CommandSpec, Config};
use crate::store::{NewJob, UniqueClaim};

pub const PROVISION: &str = "cm.provision";
pub const LAUNCH: &str = "cm.launch";

/// Why a message is not a job at all; such messages go to the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("unknown task {task:?} (this config's workers run {known})")]
    UnknownTask { task: String, known: String },
    /// Celery's chord join polls a result backend that cm does not write: said plainly,
    /// with the native way, rather than as one more unknown task.
    #[error(
        "celery.chord_unlock: chords need a result backend cm does not write; use --after (cm call/launch/provision --after ID...) for a step after a group"
    )]
    ChordUnlock,
}

/// The task Celery publishes to join a chord's header.
pub const CHORD_UNLOCK: &str = "celery.chord_unlock";

/// A `[tasks."NAME"]` job: its command and the values its arguments gave.
#[derive(Debug, Clone)]
pub struct TaskCall {
    pub name: String,
    pub spec: Arc<CommandSpec>,
    pub values: args::Bound,
}

#[derive(Debug, Clone)]
pub enum Job {
    Provision(provision::Provision),
    Launch(launch::Launch),
    Task(TaskCall),
    /// Arguments that do not fit the task: the job ends FAILURE with `why`; nothing runs.
    Unfit {
        task: String,
        why: String,
    },
}

impl Job {
    pub fn from_message(msg: &TaskMessage, cfg: &Config) -> Result<Self, JobError> {
        let unfit = |e: args::ArgsError| Job::Unfit {
            task: msg.task.clone(),
            why: e.to_string(),
        };
        let bind = |params: &[args::Param]| args::bind(&msg.task, params, &msg.args, &msg.kwargs);
        Ok(match msg.task.as_str() {
            PROVISION => match bind(provision::params()) {
                Ok(b) => Job::Provision(provision::Provision::from_bound(&b)),
                Err(e) => unfit(e),
            },
            LAUNCH => match bind(launch::params()) {
                Ok(b) => {
                    let launch = launch::Launch::from_bound(&b);
                    match launch.hosts_problem(cfg) {
                        None => Job::Launch(launch),
                        Some(why) => Job::Unfit {
                            task: msg.task.clone(),
                            why,
                        },
                    }
                }
                Err(e) => unfit(e),
            },
            CHORD_UNLOCK if !cfg.tasks.contains_key(CHORD_UNLOCK) => {
                return Err(JobError::ChordUnlock)
            }
            name => {
                let Some(spec) = cfg.tasks.get(name) else {
                    let mut known: Vec<&str> = crate::config::BUILT_IN.to_vec();
                    known.extend(cfg.tasks.keys().map(String::as_str));
                    return Err(JobError::UnknownTask {
                        task: name.to_string(),
                        known: known.join(", "),
                    });
                };
                let placeholders = spec.template.placeholders();
                let params: Vec<args::Param> = spec
                    .params
                    .iter()
                    .map(|p| args::Param::named(p, placeholders.contains(&p.as_str())))
                    .collect();
                // Without `params`, the placeholders are keywords only: no position to bind to.
                let positional: &[serde_json::Value] = &msg.args;
                let bound = if !spec.positional && !positional.is_empty() {
                    Err(args::ArgsError::TooMany {
                        task: name.to_string(),
                        most: 0,
                        given: positional.len(),
                    })
                } else {
                    bind(&params)
                };
                match bound {
                    Ok(values) => Job::Task(TaskCall {
                        name: name.to_string(),
                        spec: spec.clone(),
                        values,
                    }),
                    Err(e) => unfit(e),
                }
            }
        })
    }

    /// `key=value` words for the log line.
    pub fn describe(&self) -> String {
        match self {
            Job::Provision(p) => format!("host={} image={}", p.host, p.image),
            Job::Launch(l) => format!(
                "server={} recipe={:?} kind={} hosts={}",
                l.server, l.recipe, l.kind, l.hosts
            ),
            Job::Task(t) => t.values.describe(),
            Job::Unfit { why, .. } => format!("(arguments do not fit: {why})"),
        }
    }

    /// Checked before anything runs: what this job asks for that cannot be.
    pub fn refusal(&self, cfg: &Config) -> Option<String> {
        match self {
            Job::Provision(_) | Job::Task(_) => None,
            Job::Launch(l) => l.refusal(cfg),
            Job::Unfit { why, .. } => Some(why.clone()),
        }
    }

    /// What runs, checked as the worker checks it before it runs anything: the command's argv
    /// (`None`: the job is simulated), or why nothing can run (an unknown server or recipe,
    /// arguments that do not fit, a value no argv element can hold).
    pub fn prepare<'a>(
        &'a self,
        cfg: &'a Config,
    ) -> Result<Option<(&'a CommandSpec, Vec<String>)>, String> {
        if let Some(why) = self.refusal(cfg) {
            return Err(why);
        }
        let Some((spec, values)) = self.command(cfg) else {
            return Ok(None);
        };
        let argv = spec
            .template
            .render(&values, spec.allow_options)
            .map_err(|e| e.to_string())?;
        Ok(Some((spec, argv)))
    }

    /// The command this job runs, with its values, if it is not simulated.
    pub fn command<'a>(&'a self, cfg: &'a Config) -> Option<(&'a CommandSpec, args::Bound)> {
        match self {
            Job::Task(t) => Some((&t.spec, t.values.clone())),
            Job::Launch(l) => {
                let spec = cfg.recipes.get(&l.recipe)?.command.as_deref()?;
                Some((spec, args::Bound::of(l.values())))
            }
            Job::Provision(p) => Some((cfg.provision.as_deref()?, args::Bound::of(p.values()))),
            Job::Unfit { .. } => None,
        }
    }

    /// The policy of the command this job runs (its unique key, its retries); `None` for a
    /// simulated job, which has the queue's retries and no key.
    pub fn policy<'a>(&'a self, cfg: &'a Config) -> Option<&'a TaskPolicy> {
        self.command(cfg).map(|(spec, _)| &spec.policy)
    }

    /// The claim on its unique key of job `id`, if its task has one (`unique`).
    pub fn unique_claim(&self, cfg: &Config, id: &str) -> Option<UniqueClaim> {
        let (spec, values) = self.command(cfg)?;
        let unique = spec.policy.unique.as_ref()?;
        let task = match self {
            Job::Task(t) => t.name.as_str(),
            Job::Launch(_) => LAUNCH,
            _ => PROVISION,
        };
        Some(UniqueClaim {
            job_id: id.to_string(),
            key: unique.key(task, &values),
            hold: unique.hold,
        })
    }

    /// The intermediate states, in order, between STARTED and SUCCESS of a simulated job.
    pub fn steps(&self) -> &'static [&'static str] {
        match self {
            Job::Provision(_) => provision::STEPS,
            Job::Launch(_) => launch::STEPS,
            Job::Task(_) | Job::Unfit { .. } => &[],
        }
    }

    /// A simulated failure planned for `step`, if any (a recipe marked `fail = true`).
    pub fn fails_at(&self, cfg: &Config, step: &str) -> Option<String> {
        match self {
            Job::Launch(l) => l.fails_at(cfg, step),
            _ => None,
        }
    }

    /// What a simulated SUCCESS returns (to the store and rpc:// clients), as JSON text.
    /// Serialised from borrowed fields, keys in the order a `json!` object has always given
    /// them (sorted).
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
            Job::Task(_) | Job::Unfit { .. } => Ok("null".into()),
        };
        // Structs of strings always serialise.
        text.unwrap_or_default()
    }
}

/// The job of `msg` if a worker would run it, else why a worker would refuse it: what a
/// publisher (`cm call`) checks before it publishes, with the worker's own code.
pub fn screen(msg: &TaskMessage, cfg: &Config) -> Result<Job, String> {
    let job = Job::from_message(msg, cfg).map_err(|e| e.to_string())?;
    job.prepare(cfg)?;
    Ok(job)
}

/// The store record of a message routed to `queue`; a job's own fields are filled in where the
/// message is a runnable job.
pub fn new_job(
    msg: &TaskMessage,
    cfg: &Config,
    queue: &str,
    batch: Option<String>,
    now_ms: i64,
) -> NewJob {
    record(
        msg,
        Job::from_message(msg, cfg).ok().as_ref(),
        queue,
        batch,
        now_ms,
    )
}

/// [`new_job`], and the claim on its unique key if its task has one.
pub fn new_unique_job(
    msg: &TaskMessage,
    cfg: &Config,
    queue: &str,
    batch: Option<String>,
    now_ms: i64,
) -> (NewJob, Option<UniqueClaim>) {
    let job = Job::from_message(msg, cfg).ok();
    let claim = job.as_ref().and_then(|j| j.unique_claim(cfg, &msg.id));
    (record(msg, job.as_ref(), queue, batch, now_ms), claim)
}

/// The message of a job the store holds, to publish it again as it came: same id, task,
/// arguments and retries, and the options the store keeps (expires, time limits, reply
/// address, Celery's canvas: chain, links, group, parent and root); no eta, it is due. Used by
/// every re-publish: a lapsed lease, a due eta, a job released from the outbox.
pub fn stored_message(row: &crate::store::JobRow) -> anyhow::Result<TaskMessage> {
    type ArgsKwargs = (
        Vec<serde_json::Value>,
        serde_json::Map<String, serde_json::Value>,
    );
    let (args, kwargs): ArgsKwargs = serde_json::from_str(&row.job.args)
        .map_err(|e| anyhow::anyhow!("its stored arguments are not [args, kwargs]: {e}"))?;
    let mut msg = TaskMessage::new(&row.job.task, args, kwargs);
    msg.id.clone_from(&row.job.id);
    msg.retries = u32::try_from(row.retries).unwrap_or(0);
    let o = &row.job.options;
    msg.expires_ms = o.expires_ms;
    let limit = |ms: Option<i64>| {
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(std::time::Duration::from_millis)
    };
    msg.time_limit.hard = limit(o.time_limit_ms);
    msg.time_limit.soft = limit(o.soft_time_limit_ms);
    msg.reply_to.clone_from(&o.reply_to);
    msg.priority = u8::try_from(o.priority).unwrap_or(0);
    if let Some(embed) = &o.embed {
        msg.embed = serde_json::from_str(embed)
            .map_err(|e| anyhow::anyhow!("its stored canvas (embed) is not Celery's: {e}"))?;
    }
    msg.group.clone_from(&o.group_id);
    msg.group_index = o.group_index;
    msg.parent_id.clone_from(&o.parent_id);
    msg.root_id.clone_from(&o.root_id);
    Ok(msg)
}

/// What the store keeps of `msg` beyond its task and arguments, to publish it again as it
/// came. All `None` for a plain message, which costs the store nothing.
pub fn options_of(msg: &TaskMessage) -> crate::store::MessageOptions {
    let ms = |d: Option<std::time::Duration>| {
        d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    crate::store::MessageOptions {
        eta_ms: msg.eta_ms,
        expires_ms: msg.expires_ms,
        time_limit_ms: ms(msg.time_limit.hard),
        soft_time_limit_ms: ms(msg.time_limit.soft),
        reply_to: msg.reply_to.clone(),
        priority: i64::from(msg.priority),
        // Signatures are JSON values: they always serialise.
        embed: (!msg.embed.is_plain())
            .then(|| serde_json::to_string(&msg.embed).unwrap_or_default()),
        group_id: msg.group.clone(),
        group_index: msg.group_index,
        parent_id: msg.parent_id.clone(),
        // A root that is the job itself says nothing (Celery sends its own id).
        root_id: msg.root_id.clone().filter(|root| *root != msg.id),
    }
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
        options: Box::new(options_of(msg)),
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
        Some(Job::Task(t)) => {
            record.hosts = t.values.text("host");
        }
        Some(Job::Unfit { .. }) | None => {}
    }
    record
}

#[cfg(test)]
mod tests;

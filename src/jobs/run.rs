//! Running a job: the simulations walk their steps, each lasting the configured step time; a
//! job with a command runs it (`command/`). Either way a revoke with terminate, or the worker's
//! shutdown once its grace is over, ends it early.
//!
//! The worker records and logs what it is told here (`step`, `line`); it does not know how a
//! kind runs.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use super::cancel::{Cancel, CancelRx};
use super::command::{self, Ended, Invocation, Stream};
use super::Job;
use crate::config::Config;
use rand::Rng;

/// How a job that ran ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Its result, as JSON text.
    Success(String),
    Failure(String),
    /// Ended by a revoke with terminate: the job is REVOKED, with why.
    Revoked(String),
    /// Stopped because the worker is stopping: the job goes back to the queue and runs again.
    Interrupted(String),
}

/// A finished run: its verdict and, for a command, the tail of its output.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub verdict: Verdict,
    pub output: Option<String>,
    /// The command's exit status, if it exited (a retry policy's `retry_on_exit` reads it).
    pub exit_code: Option<i32>,
}

impl From<Verdict> for Finish {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            output: None,
            exit_code: None,
        }
    }
}

/// What a run needs from the worker running it.
pub struct Context<'a> {
    pub id: &'a str,
    pub queue: &'a str,
    /// `name@host`
    pub node: &'a str,
    /// The message's `[args, kwargs]`: a command's stdin, as JSON.
    pub args: (
        &'a [serde_json::Value],
        &'a serde_json::Map<String, serde_json::Value>,
    ),
    /// Where a command's `$CM_RESULT` file goes.
    pub result_dir: &'a Path,
    pub cancel: CancelRx,
    /// The message's own time limit (its `timelimit` header, see
    /// [`crate::celery::message::TimeLimit::enforced`]); a command's configured `time_limit` also
    /// holds, and the smaller of the two wins.
    pub time_limit: Option<Duration>,
}

impl Job {
    /// Runs the job; `step` hears each intermediate state as it begins, `line` each line a
    /// command prints.
    pub async fn run(
        &self,
        cfg: &Config,
        ctx: Context<'_>,
        step: impl FnMut(Cow<'static, str>),
        line: impl FnMut(Stream, &str),
    ) -> Finish {
        let prepared = match self.prepare(cfg) {
            Ok(prepared) => prepared,
            Err(why) => return Verdict::Failure(why).into(),
        };
        match prepared {
            Some((spec, argv)) => {
                let task = match self {
                    Job::Task(t) => t.name.as_str(),
                    Job::Launch(_) => super::LAUNCH,
                    _ => super::PROVISION,
                };
                let mut env = spec.env.clone();
                env.extend([
                    ("CM_TASK".to_string(), task.to_string()),
                    ("CM_QUEUE".into(), ctx.queue.to_string()),
                    ("CM_WORKER".into(), ctx.node.to_string()),
                    ("CM_CONFIG".into(), cfg.path.display().to_string()),
                ]);
                let inv = Invocation {
                    job_id: ctx.id.to_string(),
                    argv,
                    cwd: spec.cwd.clone(),
                    env,
                    // Values always serialise.
                    stdin: serde_json::to_string(&ctx.args).unwrap_or_default(),
                    // Not the job id: that is a client's text, and this is a path.
                    result_file: ctx
                        .result_dir
                        .join(format!("{}.json", uuid::Uuid::new_v4())),
                    time_limit: smaller(spec.time_limit, ctx.time_limit),
                    kill_grace: spec.kill_grace,
                    keep_children: spec.keep_children,
                };
                run_command(&inv, ctx.cancel, step, line).await
            }
            None => {
                let run = self.simulate(cfg, ctx.cancel, step);
                match ctx.time_limit {
                    None => run.await.into(),
                    // Dropping the simulation mid-step ends it: it holds nothing outside.
                    Some(limit) => tokio::time::timeout(limit, run)
                        .await
                        .unwrap_or_else(|_| {
                            Verdict::Failure(format!(
                                "time limit {} s exceeded",
                                limit.as_secs_f64()
                            ))
                        })
                        .into(),
                }
            }
        }
    }

    async fn simulate(
        &self,
        cfg: &Config,
        mut cancel: CancelRx,
        mut step: impl FnMut(Cow<'static, str>),
    ) -> Verdict {
        let sim = cfg.simulation;
        for &state in self.steps() {
            step(Cow::Borrowed(state));
            let seconds = if sim.step_max > sim.step_min {
                rand::rng().random_range(sim.step_min..=sim.step_max)
            } else {
                sim.step_min
            };
            if seconds > 0.0 {
                let asked = tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => None,
                    asked = cancel.asked() => Some(asked),
                };
                match asked {
                    Some(Cancel::Terminate(sig)) => {
                        return Verdict::Revoked(format!("terminated ({sig}) during {state}"))
                    }
                    Some(Cancel::Shutdown) => {
                        return Verdict::Interrupted(format!("the worker stopped during {state}"))
                    }
                    None => {}
                }
            }
            if let Some(why) = self.fails_at(cfg, state) {
                return Verdict::Failure(why);
            }
            if sim.failure_rate > 0.0 && rand::rng().random_bool(sim.failure_rate) {
                return Verdict::Failure(format!("simulated failure during {state}"));
            }
        }
        Verdict::Success(self.result_json())
    }
}

/// The smaller of two optional limits; either alone if the other is none.
fn smaller(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn run_command(
    inv: &Invocation,
    cancel: CancelRx,
    mut step: impl FnMut(Cow<'static, str>),
    line: impl FnMut(Stream, &str),
) -> Finish {
    let ran = match command::run(inv, line, |s| step(Cow::Owned(s.to_string())), cancel).await {
        Ok(ran) => ran,
        Err(e) => {
            let program = inv.argv.first().map_or("", String::as_str);
            return Verdict::Failure(format!("cannot run {program}: {e}")).into();
        }
    };
    let verdict = match (&ran.ended, ran.verdict()) {
        (_, Some(Ok(result))) => Verdict::Success(result),
        (_, Some(Err(why))) => Verdict::Failure(why),
        (Ended::Terminated(sig), None) => Verdict::Revoked(format!("terminated by {sig}")),
        (_, None) => Verdict::Interrupted("the worker stopped while the command ran".into()),
    };
    let exit_code = match ran.ended {
        Ended::Exited(code) => Some(code),
        _ => None,
    };
    Finish {
        verdict,
        output: Some(ran.tail),
        exit_code,
    }
}

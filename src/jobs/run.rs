//! Running a job: the simulations walk their steps, each lasting the configured step time.
//!
//! The worker records and logs what it is told here; it does not know how a kind runs. Command
//! tasks (a job that runs a real process) get their own arm in [`Job::run`], the process in a
//! group of its own (`control::group`: spawn, then stop with a signal and a grace).

use std::time::Duration;

use rand::Rng;

use super::Job;
use crate::config::Config;

impl Job {
    /// Runs the job; `step` hears each intermediate state as it begins. The result as JSON text,
    /// or why the job failed.
    pub async fn run(
        &self,
        cfg: &Config,
        mut step: impl FnMut(&'static str),
    ) -> Result<String, String> {
        if let Some(why) = self.refusal(cfg) {
            return Err(why);
        }
        let sim = cfg.simulation;
        for &state in self.steps() {
            step(state);
            let seconds = if sim.step_max > sim.step_min {
                rand::rng().random_range(sim.step_min..=sim.step_max)
            } else {
                sim.step_min
            };
            if seconds > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            }
            if let Some(why) = self.fails_at(cfg, state) {
                return Err(why);
            }
            if sim.failure_rate > 0.0 && rand::rng().random_bool(sim.failure_rate) {
                return Err(format!("simulated failure during {state}"));
            }
        }
        Ok(self.result_json())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Map};

    use super::*;
    use crate::jobs::{launch::Launch, PROVISION};
    use crate::protocol::TaskMessage;

    fn config(recipes: &str) -> Config {
        let text = format!(
            "[broker]\nurl = \"amqp://127.0.0.1\"\n[queues.q]\nworkers = [\"w1\"]\ntasks = [\"cm.launch\"]\n[simulation]\nstep_seconds = [0, 0]\n{recipes}"
        );
        Config::parse(Path::new("/etc/cm/fabfile.toml"), &text).expect("a valid config")
    }

    fn run(job: &Job, cfg: &Config) -> (Vec<&'static str>, Result<String, String>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let mut seen = Vec::new();
        let ran = runtime.block_on(job.run(cfg, |s| seen.push(s)));
        (seen, ran)
    }

    #[test]
    fn every_step_is_heard_in_order_then_the_result() {
        let msg = TaskMessage::new(PROVISION, vec![json!("i1"), json!("ubuntu")], Map::new());
        let job = Job::from_message(&msg).expect("provision");
        let (seen, ran) = run(&job, &config(""));
        assert_eq!(seen, super::super::provision::STEPS);
        assert_eq!(ran, Ok(job.result_json()));
    }

    #[test]
    fn a_refused_job_takes_no_step_and_a_failing_recipe_stops_at_deploy() {
        let launch = |recipe: &str| {
            Job::Launch(Launch {
                server: "india_openstack_essex".into(),
                recipe: recipe.into(),
                kind: "vm".into(),
                hosts: "i1".into(),
                user: None,
            })
        };
        let cfg = config("[recipes.Broken]\ndescription = \"x\"\nfail = true\n");
        let (seen, ran) = run(&launch("Nope"), &cfg);
        assert!(seen.is_empty());
        assert_eq!(ran, Err("unknown recipe \"Nope\"".into()));
        let (seen, ran) = run(&launch("Broken"), &cfg);
        assert_eq!(seen, ["running", "deploy"]);
        assert!(ran.is_err_and(|why| why.contains("failed to deploy")));
    }
}

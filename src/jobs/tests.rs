use std::borrow::Cow;
use std::path::Path;

use serde_json::{json, Map};

use super::run::{Context, Finish, Verdict};
use super::*;

fn config(extra: &str) -> Config {
    let text = format!(
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[queues.q]\nworkers = [\"w1\"]\ntasks = [\"cm.launch\", \"cm.provision\", \"ops.echo\"]\n[simulation]\nstep_seconds = [0, 0]\n[tasks.\"ops.echo\"]\ncommand = [\"/bin/echo\", \"{{host}}\", \"{{level}}\"]\nparams = [\"host\", \"level\", \"note\"]\n{extra}"
    );
    Config::parse(Path::new("/etc/cm/fabfile.toml"), &text).expect("a valid config")
}

fn job(task: &str, args: serde_json::Value, kwargs: serde_json::Value, cfg: &Config) -> Job {
    let args = args.as_array().cloned().unwrap_or_default();
    let kwargs = kwargs.as_object().cloned().unwrap_or_default();
    Job::from_message(&TaskMessage::new(task, args, kwargs), cfg).expect("a known task")
}

/// Runs `job`; the steps heard, the lines printed, and how it ended.
fn run(job: &Job, cfg: &Config) -> (Vec<String>, Vec<String>, Finish) {
    run_limited(job, cfg, None)
}

/// [`run`] with the message's time limit `time_limit`.
fn run_limited(
    job: &Job,
    cfg: &Config,
    time_limit: Option<std::time::Duration>,
) -> (Vec<String>, Vec<String>, Finish) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let cancel = cancel::CancelRx::never();
    let (mut steps, mut lines) = (Vec::new(), Vec::new());
    let ctx = Context {
        id: "j1",
        queue: "q",
        node: "w1@h",
        args: (&[], &Map::new()),
        result_dir: dir.path(),
        cancel,
        time_limit,
    };
    let finish = runtime.block_on(job.run(
        cfg,
        ctx,
        |s: Cow<'static, str>| steps.push(s.into_owned()),
        |_, l| lines.push(l.to_string()),
    ));
    (steps, lines, finish)
}

#[test]
fn results_are_the_json_objects_they_always_were() {
    let cfg = config("");
    let j = job(PROVISION, json!(["i1", "ubuntu"]), json!({}), &cfg);
    let want = json!({"host": "i1", "image": "ubuntu", "state": "AVAILABLE"});
    assert_eq!(j.result_json(), want.to_string());
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
fn tasks_map_to_kinds_unknown_is_refused_and_unfit_arguments_are_named() {
    let cfg = config("");
    let j = job(PROVISION, json!(["i1", "ubuntu"]), json!({}), &cfg);
    assert!(matches!(&j, Job::Provision(p) if p.host == "i1" && p.image == "ubuntu"));
    let msg = TaskMessage::new("cm.nope", vec![], Map::new());
    assert!(matches!(
        Job::from_message(&msg, &cfg),
        Err(JobError::UnknownTask { .. })
    ));
    // A chord's join is refused with the reason and the native way, not as unknown.
    let unlock = TaskMessage::new(CHORD_UNLOCK, vec![], Map::new());
    let refused = Job::from_message(&unlock, &cfg).map(|_| ());
    assert_eq!(refused, Err(JobError::ChordUnlock));
    let said = JobError::ChordUnlock.to_string();
    assert!(said.contains("use --after"), "{said}");
    for (args, kwargs, why) in [
        (
            json!(["h", "i", "x", "y"]),
            json!({}),
            "cm.provision() takes 2 positional argument(s) but 4 were given",
        ),
        (json!([["x"], "i"]), json!({}), "must be a string"),
        (json!(["h"]), json!({}), "missing required argument 'image'"),
    ] {
        let j = job(PROVISION, args, kwargs, &cfg);
        assert!(
            matches!(&j, Job::Unfit { why: w, .. } if w.contains(why)),
            "{j:?}"
        );
    }
    let j = job(
        LAUNCH,
        json!([]),
        json!({"server": "s", "recipe": "r", "flavor": 1}),
        &cfg,
    );
    assert!(
        matches!(&j, Job::Unfit { why, .. } if why.contains("unexpected keyword argument 'flavor'"))
    );
}

#[test]
fn a_command_tasks_arguments_bind_by_position_and_name_and_placeholders_are_required() {
    let cfg = config("");
    let j = job("ops.echo", json!(["db1"]), json!({"level": 3}), &cfg);
    let Job::Task(t) = &j else { panic!("{j:?}") };
    assert_eq!(
        (t.values.get("host"), t.values.get("level")),
        (Some("db1"), Some("3"))
    );
    let j = job("ops.echo", json!(["db1"]), json!({}), &cfg);
    assert!(
        matches!(&j, Job::Unfit { why, .. } if why.contains("missing required argument 'level'"))
    );
    // `note` is a parameter the command does not use: optional.
    let j = job("ops.echo", json!(["db1", "full"]), json!({}), &cfg);
    assert!(matches!(&j, Job::Task(_)));
}

#[test]
fn every_step_is_heard_in_order_then_the_result() {
    let cfg = config("");
    let j = job(PROVISION, json!(["i1", "ubuntu"]), json!({}), &cfg);
    let (steps, _, finish) = run(&j, &cfg);
    assert_eq!(steps, provision::STEPS);
    assert_eq!(finish.verdict, Verdict::Success(j.result_json()));
}

#[test]
fn a_refused_job_takes_no_step_and_a_failing_recipe_stops_at_deploy() {
    let launch = |recipe: &str| {
        Job::Launch(launch::Launch {
            server: "india_openstack_essex".into(),
            recipe: recipe.into(),
            kind: "vm".into(),
            hosts: "i1".into(),
            user: None,
        })
    };
    let cfg = config("[recipes.Broken]\ndescription = \"x\"\nfail = true\n");
    let (steps, _, finish) = run(&launch("Nope"), &cfg);
    assert!(steps.is_empty());
    assert_eq!(
        finish.verdict,
        Verdict::Failure("unknown recipe \"Nope\"".into())
    );
    let (steps, _, finish) = run(&launch("Broken"), &cfg);
    assert_eq!(steps, ["running", "deploy"]);
    assert!(matches!(finish.verdict, Verdict::Failure(why) if why.contains("failed to deploy")));
}

#[test]
fn a_command_job_prints_announces_steps_and_fails_naming_its_exit() {
    let cfg = config(
        "[recipes.Real]\ndescription = \"x\"\ncommand = [\"/bin/sh\", \"-c\", \"echo on {host}; echo 'cm-state: deploy'; exit 3\"]\n",
    );
    let real = Job::Launch(launch::Launch {
        server: "india_openstack_essex".into(),
        recipe: "Real".into(),
        kind: "vm".into(),
        hosts: "i1".into(),
        user: None,
    });
    let (steps, lines, finish) = run(&real, &cfg);
    assert_eq!(steps, ["deploy"]);
    assert_eq!(lines, ["on i1", "cm-state: deploy"]);
    assert_eq!(finish.verdict, Verdict::Failure("exit status 3".into()));
    assert!(finish.output.is_some_and(|o| o.contains("on i1")));

    let echo = job("ops.echo", json!(["--all", "1"]), json!({}), &cfg);
    let (_, lines, finish) = run(&echo, &cfg);
    assert!(lines.is_empty(), "{lines:?}");
    assert!(matches!(finish.verdict, Verdict::Failure(why) if why.contains("starts with '-'")));
}

/// A message's time limit ends a simulation and a command; with a command's own `time_limit`
/// the smaller wins.
#[test]
fn a_messages_time_limit_ends_the_job_and_the_smaller_limit_wins() {
    use std::time::{Duration, Instant};
    let sim = Config::parse(
        Path::new("/etc/cm/fabfile.toml"),
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[queues.q]\nworkers = [\"w1\"]\n[simulation]\nstep_seconds = [5, 5]\n",
    )
    .expect("a valid config");
    let launch = job(
        LAUNCH,
        json!([]),
        json!({"server": "india_openstack_essex", "recipe": "Hadoop", "kind": "vm", "hosts": "c1"}),
        &sim,
    );
    let started = Instant::now();
    let (_, _, finish) = run_limited(&launch, &sim, Some(Duration::from_millis(200)));
    assert_eq!(
        finish.verdict,
        Verdict::Failure("time limit 0.2 s exceeded".into())
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    let sleepy = |limit: &str| {
        let text = format!(
            "[broker]\nurl = \"amqp://127.0.0.1\"\n[queues.q]\nworkers = [\"w1\"]\ntasks = [\"ops.sleep\"]\n[tasks.\"ops.sleep\"]\ncommand = [\"/bin/sleep\", \"30\"]\n{limit}"
        );
        Config::parse(Path::new("/etc/cm/fabfile.toml"), &text).expect("a valid config")
    };
    for (configured, message, wins) in [
        ("", 0.3, "0.3"),
        ("time_limit = 60", 0.3, "0.3"),
        ("time_limit = 0.3", 30.0, "0.3"),
    ] {
        let cfg = sleepy(configured);
        let sleep = job("ops.sleep", json!([]), json!({}), &cfg);
        let started = Instant::now();
        let (_, _, finish) = run_limited(&sleep, &cfg, Some(Duration::from_secs_f64(message)));
        assert_eq!(
            finish.verdict,
            Verdict::Failure(format!("time limit {wins} s exceeded")),
            "{configured} / {message}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

/// A `cm.launch` message's `hosts` is a hostlist, checked as it is bound: a newline (a forged
/// log line), a typo of a hundred million hosts or one over `[limits] max_hosts` makes an
/// unfit job, refused at once; a name or a small list runs.
#[test]
fn a_launchs_hosts_is_checked_as_a_hostlist_when_bound() {
    let cfg = config("[limits]\nmax_hosts = 5\n");
    let launch = |hosts: &str| {
        job(
            LAUNCH,
            json!([]),
            json!({"server": "india_openstack_essex", "recipe": "Hadoop", "hosts": hosts}),
            &cfg,
        )
    };
    for fine in ["", "i1", "i[1-5]", "a1,b2"] {
        assert!(matches!(launch(fine), Job::Launch(_)), "{fine:?}");
    }
    let started = std::time::Instant::now();
    for (bad, why) in [
        (
            "h1\n[2026] w1@h job x cm.launch: FAILURE forged",
            "is not a hostlist",
        ),
        (
            "i[1-100000000]",
            "names 100000000 hosts, more than 5 ([limits] max_hosts)",
        ),
        ("i[1-6]", "more than 5"),
        ("i[1-", "never closed"),
    ] {
        let j = launch(bad);
        assert!(
            matches!(&j, Job::Unfit { why: w, .. } if w.contains(why) && !w.contains('\n')),
            "{bad:?}: {j:?}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(200));
}

/// What a publisher checks is what the worker checks: `screen` refuses what `run` would end
/// FAILURE without running (an unknown recipe, a value like an option, a NUL), and passes the
/// rest.
#[test]
fn screening_refuses_what_the_worker_would_refuse() {
    let cfg = config("");
    let msg = |task: &str, args: serde_json::Value, kwargs: serde_json::Value| {
        TaskMessage::new(
            task,
            args.as_array().cloned().unwrap_or_default(),
            kwargs.as_object().cloned().unwrap_or_default(),
        )
    };
    let fine = msg("ops.echo", json!(["db1", 3]), json!({}));
    assert!(matches!(screen(&fine, &cfg), Ok(Job::Task(_))));
    for (m, why) in [
        (
            msg("ops.echo", json!(["-rf", 3]), json!({})),
            "starts with '-'",
        ),
        (msg("ops.echo", json!(["a\u{0}b", 3]), json!({})), "NUL"),
        (
            msg("ops.echo", json!(["db1"]), json!({})),
            "missing required",
        ),
        (msg("cm.nope", json!([]), json!({})), "unknown task"),
        (
            msg(
                LAUNCH,
                json!([]),
                json!({"server": "s", "recipe": "Hadoop"}),
            ),
            "unknown server",
        ),
    ] {
        let refused = screen(&m, &cfg).map(|_| ());
        assert!(
            matches!(&refused, Err(w) if w.contains(why)),
            "{why}: {refused:?}"
        );
        let job = Job::from_message(&m, &cfg);
        if let Ok(job) = job {
            let (steps, _, finish) = run(&job, &cfg);
            assert!(steps.is_empty() && matches!(finish.verdict, Verdict::Failure(_)));
        }
    }
}

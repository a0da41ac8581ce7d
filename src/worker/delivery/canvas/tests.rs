use std::path::Path;

use serde_json::{json, Map, Value};

use super::*;

fn config() -> Config {
    let text = "[broker]\nurl = \"amqp://127.0.0.1\"\n[queues.q]\nworkers = [\"w1\"]\ntasks = [\"t.add\"]\n[tasks.\"t.add\"]\ncommand = [\"/bin/true\", \"{x}\", \"{y}\"]\nparams = [\"x\", \"y\"]\n";
    Config::parse(Path::new("/etc/cm/fabfile.toml"), text).expect("a valid config")
}

fn sig(task: &str, args: Value, options: Value) -> Value {
    json!({"task": task, "args": args, "kwargs": {}, "options": options,
           "subtask_type": null, "immutable": false})
}

/// A message with the chain `steps` (next step first, as a client lists them before it
/// reverses them) and `errbacks`.
fn message(steps: Vec<Value>, errbacks: Vec<Value>) -> TaskMessage {
    let mut msg = TaskMessage::new("t.add", vec![json!(1), json!(2)], Map::new());
    msg.id = "a".into();
    msg.reply_to = Some("client".into());
    msg.embed.chain = Some(steps.into_iter().rev().collect());
    msg.embed.errbacks = Some(errbacks);
    msg
}

fn args(s: &Spawned) -> Value {
    serde_json::from_str(&s.job.args).expect("[args, kwargs]")
}

#[test]
fn a_plain_message_spawns_nothing() {
    let msg = TaskMessage::new("t.add", vec![], Map::new());
    assert!(spawned(&config(), &msg, End::Success("3")).is_empty());
}

#[test]
fn success_publishes_the_next_step_with_the_result_first_and_the_rest_of_the_chain() {
    let b = sig("t.add", json!([10]), json!({"task_id": "b"}));
    let c = sig(
        "t.add",
        json!([100]),
        json!({"task_id": "c", "reply_to": "other"}),
    );
    let out = spawned(
        &config(),
        &message(vec![b, c.clone()], vec![]),
        End::Success("3"),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let next = &out[0];
    assert_eq!((next.state, next.job.id.as_str()), (PENDING, "b"));
    assert_eq!(next.job.queue, "q", "routed by the task table");
    assert_eq!(args(next), json!([[3, 10], {}]));
    let o = &next.job.options;
    assert_eq!(o.parent_id.as_deref(), Some("a"));
    assert_eq!(o.root_id.as_deref(), Some("a"));
    assert_eq!(
        o.reply_to.as_deref(),
        Some("client"),
        "the parent's, as none is given"
    );
    let embed: Embed = serde_json::from_str(o.embed.as_deref().expect("an embed")).expect("embed");
    assert_eq!(embed.chain, Some(vec![c]));
}

#[test]
fn an_immutable_step_takes_no_result_and_a_named_queue_wins() {
    let mut b = sig(
        "t.add",
        json!([1, 1]),
        json!({"task_id": "b", "queue": "elsewhere"}),
    );
    b["immutable"] = json!(true);
    let out = spawned(&config(), &message(vec![b], vec![]), End::Success("3"));
    assert_eq!(args(&out[0]), json!([[1, 1], {}]));
    assert_eq!(out[0].job.queue, "elsewhere");
}

#[test]
fn failure_fails_the_rest_of_the_chain_and_runs_errbacks_with_the_failed_id() {
    let b = sig("t.add", json!([10]), json!({"task_id": "b"}));
    let c = sig("t.add", json!([100]), json!({"task_id": "c"}));
    let errback = sig("t.add", json!([0]), json!({}));
    let out = spawned(
        &config(),
        &message(vec![b, c], vec![errback]),
        End::Failure("boom"),
    );
    let failed: Vec<_> = out.iter().filter(|s| s.state == FAILURE).collect();
    let mut ids: Vec<&str> = failed.iter().map(|s| s.job.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["b", "c"]);
    assert!(failed.iter().all(|s| s.error.as_deref() == Some("boom")));
    let errbacks: Vec<_> = out.iter().filter(|s| s.state == PENDING).collect();
    assert_eq!(errbacks.len(), 1, "{out:?}");
    assert_eq!(args(errbacks[0]), json!([["a", 0], {}]));
    assert!(
        !errbacks[0].job.id.is_empty(),
        "a new id for an unfrozen errback"
    );
}

#[test]
fn a_step_no_queue_takes_fails_at_once_with_the_rest_of_its_chain() {
    let b = sig("t.nobody", json!([]), json!({"task_id": "b"}));
    let c = sig("t.add", json!([1]), json!({"task_id": "c"}));
    let out = spawned(&config(), &message(vec![b, c], vec![]), End::Success("3"));
    let states: Vec<(&str, &str)> = out.iter().map(|s| (s.job.id.as_str(), s.state)).collect();
    assert_eq!(states, [("b", FAILURE), ("c", FAILURE)]);
    let why = out[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("no queue takes task \"t.nobody\""), "{why}");
}

#[test]
fn a_step_whose_arguments_its_task_does_not_take_fails_at_once() {
    // The result makes three arguments of a two-parameter task.
    let b = sig("t.add", json!([1, 2]), json!({"task_id": "b"}));
    let out = spawned(&config(), &message(vec![b], vec![]), End::Success("3"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].state, FAILURE);
    assert!(out[0].error.is_some(), "{out:?}");
}

#[test]
fn a_step_on_a_named_queue_whose_task_cm_does_not_know_goes_as_it_is() {
    let b = sig(
        "py.task",
        json!([]),
        json!({"task_id": "b", "queue": "python"}),
    );
    let out = spawned(&config(), &message(vec![b], vec![]), End::Success("3"));
    assert_eq!(
        (out[0].state, out[0].job.queue.as_str()),
        (PENDING, "python")
    );
}

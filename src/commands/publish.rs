//! `cm launch`, `cm provision` and `cm call`: publish jobs (persistent, confirmed), print their
//! ids, and wait for them if asked.

use crate::amqp::Brokers;
use crate::celery::message::TaskMessage;
use crate::cli::{AfterArgs, CallArgs, LaunchArgs, ProvisionArgs, WaitArgs};
use crate::client::publish::{self, Publisher};
use crate::config::{Config, QueueConfig};
use crate::exit::{CmError, Code};
use crate::jobs::{self, launch::Launch, provision::Provision};
use crate::store::Store;

pub async fn launch(cfg: &Config, args: &LaunchArgs) -> anyhow::Result<Code> {
    if !cfg.servers.contains_key(&args.server) {
        let known: Vec<_> = cfg.servers.keys().map(String::as_str).collect();
        return Err(CmError::BadArgument(format!(
            "unknown server {:?}: fabfile.toml has {}",
            args.server,
            known.join(", ")
        ))
        .into());
    }
    if !cfg.recipes.contains_key(&args.recipe) {
        let known: Vec<_> = cfg.recipes.keys().map(|k| format!("{k:?}")).collect();
        return Err(CmError::BadArgument(format!(
            "unknown recipe {:?}: fabfile.toml has {}",
            args.recipe,
            known.join(", ")
        ))
        .into());
    }
    let hosts = super::bounds::hosts(cfg, &args.hosts, args.count)?;
    let messages = repeat(args.count, &hosts, |host| {
        let job = Launch {
            server: args.server.clone(),
            recipe: args.recipe.clone(),
            kind: args.kind.as_str().into(),
            hosts: host.to_string(),
            user: args.user.clone(),
        };
        TaskMessage::new(jobs::LAUNCH, Vec::new(), job.kwargs())
    });
    publish(
        cfg,
        jobs::LAUNCH,
        prioritized(messages, args.priority),
        &args.after,
        &args.wait,
    )
    .await
}

pub async fn provision(cfg: &Config, args: &ProvisionArgs) -> anyhow::Result<Code> {
    let hosts = super::bounds::hosts(cfg, &args.hosts, args.count)?;
    let messages = repeat(args.count, &hosts, |host| {
        TaskMessage::new(
            jobs::PROVISION,
            Provision::args(host, &args.image),
            serde_json::Map::new(),
        )
    });
    publish(
        cfg,
        jobs::PROVISION,
        prioritized(messages, args.priority),
        &args.after,
        &args.wait,
    )
    .await
}

/// `cm call TASK`: a job of any task cm runs (or `--count` of them), its arguments as JSON.
pub async fn call(cfg: &Config, args: &CallArgs) -> anyhow::Result<Code> {
    let positional: Vec<serde_json::Value> = serde_json::from_str(&args.args).map_err(|e| {
        CmError::BadArgument(format!("--args {:?} is not a JSON list: {e}", args.args))
    })?;
    let keywords: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&args.kwargs)
        .map_err(|e| {
        CmError::BadArgument(format!(
            "--kwargs {:?} is not a JSON object: {e}",
            args.kwargs
        ))
    })?;
    let mut msg = TaskMessage::new(&args.task, positional, keywords);
    if let Some(id) = &args.id {
        msg.id.clone_from(id);
    }
    // What a worker would refuse is refused here, before anything is stored or published.
    super::bounds::call(cfg, &msg, args.count)?;
    let queue = match &args.queue {
        Some(name) => cfg.queues.iter().find(|q| &q.name == name).ok_or_else(|| {
            CmError::BadArgument(format!(
                "unknown queue {name:?}: this config has {}",
                cfg.queues
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => publish::queue_for(cfg, &args.task)?,
    };
    let first = msg.id.clone();
    let mut messages = Vec::with_capacity(args.count as usize);
    for _ in 1..args.count {
        messages.push(TaskMessage::new(
            &msg.task,
            msg.args.clone(),
            msg.kwargs.clone(),
        ));
    }
    messages.insert(0, msg);
    let messages = prioritized(messages, args.priority);
    let (code, store) = publish_and_wait(cfg, queue, messages, &args.after, &args.wait).await?;
    if !args.wait.wait || args.count > 1 {
        return Ok(code);
    }
    if let Some(result) = store.get(&first).await?.and_then(|j| j.result) {
        crate::outln!("{result}");
    }
    Ok(code)
}

/// `messages` with `priority` (0, as Celery's default, when not given).
fn prioritized(mut messages: Vec<TaskMessage>, priority: Option<u8>) -> Vec<TaskMessage> {
    for m in &mut messages {
        m.priority = priority.unwrap_or(0);
    }
    messages
}

fn repeat(count: u32, hosts: &[String], make: impl Fn(&str) -> TaskMessage) -> Vec<TaskMessage> {
    (0..count)
        .flat_map(|_| hosts.iter().map(|h| make(h)))
        .collect()
}

/// Publishes `messages` to the queue that takes `task` (after `after`'s jobs, if any), prints
/// the job ids, and waits if asked.
async fn publish(
    cfg: &Config,
    task: &str,
    messages: Vec<TaskMessage>,
    after: &AfterArgs,
    wait: &WaitArgs,
) -> anyhow::Result<Code> {
    let queue = publish::queue_for(cfg, task)?;
    Ok(publish_and_wait(cfg, queue, messages, after, wait).await?.0)
}

/// [`publish`] to `queue`; also returns the store, for what the caller reads after.
async fn publish_and_wait(
    cfg: &Config,
    queue: &QueueConfig,
    mut messages: Vec<TaskMessage>,
    after: &AfterArgs,
    wait: &WaitArgs,
) -> anyhow::Result<(Code, Store)> {
    let parents = after.parents();
    let brokers = Brokers::of(cfg);
    // The store is opened while the broker is connected to: a one-job `--wait` is mostly that.
    let (store, publisher) =
        tokio::join!(Store::open(&cfg.store_url), Publisher::open(cfg, &brokers));
    let store = match store {
        Ok(store) => store,
        Err(e) => {
            if let Ok(publisher) = publisher {
                publisher.close().await;
            }
            return Err(e.into());
        }
    };
    let publisher = publisher?;
    // The replies come on the publisher's channel: it stays open until they are all in.
    let done = async {
        let batch = if parents.is_empty() {
            publisher
                .send(&store, queue, &mut messages, wait.wait)
                .await?
        } else {
            publisher
                .send_after(&store, queue, &messages, &parents)
                .await?
        };
        let mut out = String::with_capacity(messages.len() * 37);
        for m in &messages {
            out.push_str(batch.shown_id(&m.id));
            out.push('\n');
        }
        crate::out!("{out}");
        // On stderr: stdout stays one id per job, as scripts read it.
        for d in &batch.duplicates {
            eprintln!(
                "already queued as {} (unique key {:?} is held)",
                d.holder, d.key
            );
        }
        if !wait.wait {
            return Ok(Code::Success);
        }
        super::wait::batch(&store, batch, messages.len(), wait.timeout).await
    }
    .await;
    publisher.close().await;
    Ok((done?, store))
}

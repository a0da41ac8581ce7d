//! `cm launch` and `cm provision`: publish jobs (persistent, confirmed) and print their ids.

use crate::amqp::Publisher;
use crate::cli::{CallArgs, LaunchArgs, ProvisionArgs, WaitArgs};

use crate::celery::message::TaskMessage;
use crate::client::publish;
use crate::client::results::{Replies, PUSHED_UP_TO};
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
    publish(cfg, jobs::LAUNCH, messages, &args.wait).await
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
    publish(cfg, jobs::PROVISION, messages, &args.wait).await
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
    let msg = TaskMessage::new(&args.task, positional, keywords);
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
    let brokers = crate::amqp::Brokers::new(&cfg.broker_url);
    let (store, conn) = tokio::join!(Store::open(&cfg.store_url), publish::connect(cfg, &brokers));
    let (store, (conn, node)) = (store?, conn?);
    let code = publish_and_wait(cfg, &conn, &node, &store, queue, messages, &args.wait).await;
    let _ = conn.close(200, "done".into()).await;
    let code = code?;
    if !args.wait.wait || args.count > 1 {
        return Ok(code);
    }
    if let Some(result) = store.get(&first).await?.and_then(|j| j.result) {
        crate::outln!("{result}");
    }
    Ok(code)
}

fn repeat(count: u32, hosts: &[String], make: impl Fn(&str) -> TaskMessage) -> Vec<TaskMessage> {
    (0..count)
        .flat_map(|_| hosts.iter().map(|h| make(h)))
        .collect()
}

/// Replies with the final states of `messages` if they are to be waited for and few enough
/// ([`PUSHED_UP_TO`]); their `reply_to` says so.
async fn replies_for(
    publisher: &Publisher,
    wait: &WaitArgs,
    messages: &mut [TaskMessage],
) -> anyhow::Result<Option<Replies>> {
    if !wait.wait || messages.len() > PUSHED_UP_TO {
        return Ok(None);
    }
    let replies = Replies::on(publisher).await?;
    for m in messages.iter_mut() {
        m.reply_to = Some(replies.address().to_string());
    }
    Ok(Some(replies))
}

/// Publishes through [`crate::client::publish::publish_jobs`], prints the job ids, and waits if asked.
async fn publish(
    cfg: &Config,
    task: &str,
    messages: Vec<TaskMessage>,
    wait: &WaitArgs,
) -> anyhow::Result<Code> {
    let queue = publish::queue_for(cfg, task)?;
    // The store is opened while the broker is connected to: a one-job `--wait` is mostly that.
    let brokers = crate::amqp::Brokers::new(&cfg.broker_url);
    let (store, conn) = tokio::join!(Store::open(&cfg.store_url), publish::connect(cfg, &brokers));
    let (store, (conn, node)) = (store?, conn?);
    let code = publish_and_wait(cfg, &conn, &node, &store, queue, messages, wait).await;
    let _ = conn.close(200, "done".into()).await;
    code
}

async fn publish_and_wait(
    cfg: &Config,
    conn: &std::sync::Arc<lapin::Connection>,
    node: &str,
    store: &Store,
    queue: &QueueConfig,
    mut messages: Vec<TaskMessage>,
    wait: &WaitArgs,
) -> anyhow::Result<Code> {
    let publisher = publish::publisher(cfg, conn, node).await?;
    // The replies come on the publisher's channel: it stays open until they are all in.
    let done = async {
        let replies = replies_for(&publisher, wait, &mut messages).await?;
        let batch = publish::publish_with(cfg, &publisher, store, queue, &messages).await?;
        let mut out = String::with_capacity(messages.len() * 37);
        for m in &messages {
            out.push_str(&m.id);
            out.push('\n');
        }
        crate::out!("{out}");
        if !wait.wait {
            return Ok(Code::Success);
        }
        super::wait::batch(store, &batch, messages.len(), wait.timeout, replies).await
    }
    .await;
    publisher.close().await;
    done
}

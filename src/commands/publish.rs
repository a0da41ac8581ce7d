//! `cm launch` and `cm provision`: publish jobs (persistent, confirmed) and print their ids.

use crate::broker::{self, Publisher};
use crate::cli::{LaunchArgs, ProvisionArgs, WaitArgs};
use crate::config::Config;
use crate::exit::{CmError, Code};
use crate::jobs::{self, launch::Launch, provision::Provision};
use crate::protocol::TaskMessage;
use crate::store::{self, Store};

fn expand_hosts(hosts: &str) -> Result<Vec<String>, CmError> {
    let list = hostlist_parser::parse(hosts).map_err(|e| {
        CmError::BadArgument(format!(
            "--hosts {hosts:?} is not a hostlist (e.g. 'i[1-3]'): {e}"
        ))
    })?;
    if list.is_empty() {
        return Err(CmError::BadArgument("--hosts names no host".into()));
    }
    Ok(list)
}

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
    let hosts = expand_hosts(&args.hosts)?;
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
    publish(cfg, jobs::LAUNCH, &messages, &args.wait).await
}

pub async fn provision(cfg: &Config, args: &ProvisionArgs) -> anyhow::Result<Code> {
    let hosts = expand_hosts(&args.hosts)?;
    let messages = repeat(args.count, &hosts, |host| {
        TaskMessage::new(
            jobs::PROVISION,
            Provision::args(host, &args.image),
            serde_json::Map::new(),
        )
    });
    publish(cfg, jobs::PROVISION, &messages, &args.wait).await
}

fn repeat(count: u32, hosts: &[String], make: impl Fn(&str) -> TaskMessage) -> Vec<TaskMessage> {
    (0..count)
        .flat_map(|_| hosts.iter().map(|h| make(h)))
        .collect()
}

/// Stores the jobs PENDING, publishes them confirmed, and takes the records back if the broker
/// would not have them: the store never shows a PENDING job that was not published.
async fn publish(
    cfg: &Config,
    task: &str,
    messages: &[TaskMessage],
    wait: &WaitArgs,
) -> anyhow::Result<Code> {
    let queue = cfg.queue_for_task(task).ok_or_else(|| {
        CmError::BadArgument(format!(
            "no queue takes {task}: add it to the tasks of a [queues.NAME] table in {}",
            cfg.path.display()
        ))
    })?;
    let origin = format!("cm@{}", cfg.node_host);
    // Connect first: with no broker there is nothing to record.
    let conn = broker::connect(&cfg.broker_url, &format!("cm publisher {origin}")).await?;
    let publisher = Publisher::open(&conn, &cfg.broker_url, &origin).await?;
    // Declared here too: a message to a queue nobody declared yet would be dropped by the broker.
    broker::declare_queue(publisher.channel(), &cfg.broker_url, &queue.name).await?;

    let store = Store::open(&cfg.store_url).await?;
    let batch = uuid::Uuid::new_v4().to_string();
    let now = store::now_ms();
    let records: Vec<_> = messages
        .iter()
        .map(|m| jobs::new_job(m, &queue.name, Some(batch.clone()), now))
        .collect();
    store.insert_pending(&records).await?;
    if let Err(e) = publisher.publish_all(&queue.name, messages).await {
        if let Err(undo) = store.delete_unpublished(&batch).await {
            tracing::error!("taking back the PENDING records of batch {batch}: {undo}");
        }
        return Err(e.into());
    }
    let _ = conn.close(200, "published".into()).await;
    let mut out = String::with_capacity(messages.len() * 37);
    for m in messages {
        out.push_str(&m.id);
        out.push('\n');
    }
    print!("{out}");
    if !wait.wait {
        return Ok(Code::Success);
    }
    super::wait::batch(&store, &batch, messages.len(), wait.timeout).await
}

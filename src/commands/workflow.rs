//! `cm jobs retry` and `cm jobs tree`: a failed job run again, and a workflow shown whole; and
//! the parents and children `cm jobs show` lists.

use std::collections::BTreeSet;

use super::lookup::{find, open_existing};
use crate::amqp::Brokers;
use crate::config::Config;
use crate::exit::Code;
use crate::store::{Links, Store, Tree};

/// `cm jobs retry ID`: prints the new job's id.
pub async fn retry(cfg: &Config, id: &str) -> anyhow::Result<Code> {
    let store = open_existing(cfg).await?;
    let row = find(&store, id).await?;
    let by = format!("cm@{}", cfg.node_host);
    let brokers = Brokers::of(cfg);
    let new_id = crate::client::retry::retry(cfg, &brokers, &store, &row.job.id, &by).await?;
    crate::outln!("{new_id}");
    Ok(Code::Success)
}

/// `cm jobs tree ID [--json]`: the workflow from its roots, one job a line, children indented
/// under each parent (a job with several parents appears under each, its children once).
pub async fn tree(cfg: &Config, id: &str, json: bool) -> anyhow::Result<Code> {
    let store = open_existing(cfg).await?;
    let row = find(&store, id).await?;
    let tree = store.tree(&row.job.id).await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&tree)?);
        return Ok(Code::Success);
    }
    let mut shown = BTreeSet::new();
    for root in &tree.roots {
        print_under(&tree, root, "", 0, &mut shown);
    }
    Ok(Code::Success)
}

fn print_under(tree: &Tree, id: &str, mode: &str, depth: usize, shown: &mut BTreeSet<String>) {
    let Some(job) = tree.jobs.get(id) else {
        return;
    };
    let again = !shown.insert(id.to_string());
    let how = match mode {
        "" => String::new(),
        "after" => "after ".into(),
        other => format!("{} ", other.replace('_', "-")),
    };
    crate::outln!(
        "{:indent$}{how}{} {} {}{}{}",
        "",
        job.id,
        job.task,
        job.state,
        job.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        if again { " (shown above)" } else { "" },
        indent = depth * 2
    );
    if again {
        return;
    }
    for (child, mode) in tree.children_of(id) {
        print_under(tree, child, mode, depth + 1, shown);
    }
}

/// `cm jobs show`'s lines on a job's links: its parents, children and retries.
pub(super) async fn show_links(store: &Store, id: &str) -> anyhow::Result<Links> {
    let links = store.links(id).await?;
    for (title, list) in [("parents", &links.parents), ("children", &links.children)] {
        if list.is_empty() {
            continue;
        }
        crate::outln!("{title}:");
        for l in list {
            crate::outln!(
                "  {:<9} {} {} {}",
                l.mode.replace('_', "-"),
                l.job.id,
                l.job.task,
                l.job.state
            );
        }
    }
    if let Some(of) = &links.retry_of {
        crate::outln!("retry of {of}");
    }
    if let Some(new) = &links.retried_as {
        crate::outln!("retried as {new}");
    }
    Ok(links)
}

//! What a launch or provision request may ask for, checked before anything is stored or
//! published; the same rules for the HTML forms and the JSON API.

use serde::Deserialize;

use crate::celery::message::TaskMessage;
use crate::config::hostlist::{self, HostlistError};
use crate::config::Config;
use crate::jobs::{self, launch::Launch, provision::Provision};

/// A bad value, and the form field it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct LaunchInput {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub hosts: Option<String>,
    /// "Provision these hosts first, with image": when given, each host's launch waits for
    /// that host's provision with this image.
    #[serde(default)]
    pub image: Option<String>,
}

/// What a launch request publishes: its launch jobs now, or each after its host's provision.
#[derive(Debug)]
pub enum LaunchPlan {
    Now(Vec<TaskMessage>),
    /// (provision, launch) per host: the launch waits `--after` the provision.
    AfterProvision(Vec<(TaskMessage, TaskMessage)>),
}

/// The launch messages of `input` and, with an image, one provision per host before them.
pub fn launch_plan(cfg: &Config, input: &LaunchInput) -> Result<LaunchPlan, Invalid> {
    let launches = launch_messages(cfg, input)?;
    if given(&input.image).is_none() {
        return Ok(LaunchPlan::Now(launches));
    }
    let provision = ProvisionInput {
        hosts: input.hosts.clone(),
        image: input.image.clone(),
    };
    // The same hostlist expanded the same way: the i-th provision is the i-th launch's host.
    let provisions = provision_messages(cfg, &provision)?;
    Ok(LaunchPlan::AfterProvision(
        provisions.into_iter().zip(launches).collect(),
    ))
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ProvisionInput {
    #[serde(default)]
    pub hosts: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// One `cm.launch` message per host, or the first field that is wrong.
pub fn launch_messages(cfg: &Config, input: &LaunchInput) -> Result<Vec<TaskMessage>, Invalid> {
    let server = given(&input.server).ok_or_else(|| Invalid::new("server", "choose a server"))?;
    let recipe = given(&input.recipe).ok_or_else(|| Invalid::new("recipe", "choose a recipe"))?;
    if !cfg.servers.contains_key(server) {
        let known: Vec<_> = cfg.servers.keys().map(String::as_str).collect();
        return Err(Invalid::new(
            "server",
            format!("unknown server {server:?} (known: {})", known.join(", ")),
        ));
    }
    if !cfg.recipes.contains_key(recipe) {
        let known: Vec<_> = cfg.recipes.keys().map(String::as_str).collect();
        return Err(Invalid::new(
            "recipe",
            format!("unknown recipe {recipe:?} (known: {})", known.join(", ")),
        ));
    }
    let kind = given(&input.kind).unwrap_or("vm");
    if !matches!(kind, "vm" | "baremetal") {
        return Err(Invalid::new(
            "kind",
            format!("kind must be vm or baremetal, not {kind:?}"),
        ));
    }
    let hosts = expand_hosts(&input.hosts, cfg.web_max_hosts)?;
    Ok(hosts
        .iter()
        .map(|host| {
            let job = Launch {
                server: server.to_string(),
                recipe: recipe.to_string(),
                kind: kind.to_string(),
                hosts: host.clone(),
                user: None,
            };
            TaskMessage::new(jobs::LAUNCH, Vec::new(), job.kwargs())
        })
        .collect())
}

/// One `cm.provision` message per host, or the first field that is wrong.
pub fn provision_messages(
    cfg: &Config,
    input: &ProvisionInput,
) -> Result<Vec<TaskMessage>, Invalid> {
    let hosts = expand_hosts(&input.hosts, cfg.web_max_hosts)?;
    let image = given(&input.image).ok_or_else(|| Invalid::new("image", "name an image"))?;
    if image.len() > 200 || image.chars().any(char::is_control) {
        return Err(Invalid::new(
            "image",
            "an image name is at most 200 printable characters",
        ));
    }
    Ok(hosts
        .iter()
        .map(|host| {
            TaskMessage::new(
                jobs::PROVISION,
                Provision::args(host, image),
                serde_json::Map::new(),
            )
        })
        .collect())
}

/// Expands a hostlist like `i[1-3]`, refusing more than `max` hosts before expanding them.
pub fn expand_hosts(hosts: &Option<String>, max: usize) -> Result<Vec<String>, Invalid> {
    let hosts =
        given(hosts).ok_or_else(|| Invalid::new("hosts", "give a hostlist, e.g. i[1-3]"))?;
    hostlist::expand(hosts, max).map_err(|e| match e {
        HostlistError::TooMany { hosts, max } => Invalid::new(
            "hosts",
            format!("{hosts} hosts is more than the {max} one launch may start ([web] max_hosts)"),
        ),
        HostlistError::Empty => Invalid::new("hosts", "the hostlist names no host"),
        e => Invalid::new("hosts", format!("{} {e}", hostlist::quoted(hosts))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_capped_and_checked() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(expand_hosts(&some("i[1-3]"), 10).map(|l| l.len()), Ok(3));
        assert_eq!(
            expand_hosts(&some("i[1-11]"), 10).map_err(|e| e.field),
            Err("hosts")
        );
        assert!(expand_hosts(&some("i[1-1000000000]"), 1000).is_err());
        assert!(expand_hosts(&some("i[3-"), 10).is_err());
        assert!(expand_hosts(&some("  "), 10).is_err());
        assert!(expand_hosts(&None, 10).is_err());
    }

    #[test]
    fn an_image_pairs_each_hosts_launch_with_its_provision(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let text = "[queues.q]\nworkers = [\"w1\"]\ntasks = [\"cm.launch\", \"cm.provision\"]\n";
        let cfg = Config::parse(std::path::Path::new("/etc/cm/fabfile.toml"), text)?;
        let some = |s: &str| Some(s.to_string());
        let mut input = LaunchInput {
            server: some("india_openstack_essex"),
            recipe: some("Hadoop"),
            kind: None,
            hosts: some("h[1-3]"),
            image: some("  "),
        };
        assert!(matches!(launch_plan(&cfg, &input), Ok(LaunchPlan::Now(l)) if l.len() == 3));
        input.image = some("ubuntu");
        let plan = launch_plan(&cfg, &input).map_err(|e| e.message)?;
        let LaunchPlan::AfterProvision(pairs) = plan else {
            return Err("no provisions with an image".into());
        };
        let hosts: Vec<(String, String)> = (pairs.iter())
            .map(|(p, l)| (p.args[0].to_string(), l.kwargs["hosts"].to_string()))
            .collect();
        assert_eq!(
            hosts,
            [("h1", "h1"), ("h2", "h2"), ("h3", "h3")]
                .map(|(a, b)| (format!("{a:?}"), format!("{b:?}")))
        );
        input.image = some("bad\nimage");
        assert_eq!(
            launch_plan(&cfg, &input).map_err(|e| e.field).err(),
            Some("image")
        );
        Ok(())
    }
}

//! What a launch or provision request may ask for, checked before anything is stored or
//! published; the same rules for the HTML forms and the JSON API.

use serde::Deserialize;

use crate::celery::message::TaskMessage;
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
    // `i[1-999999999]` must be refused without building a billion strings first.
    if let Some(n) = count_upper_bound(hosts).filter(|n| *n > max as u128) {
        return Err(too_many(n, max));
    }
    let list = hostlist_parser::parse(hosts).map_err(|e| {
        let why = e.to_string().replace('\n', " ");
        Invalid::new(
            "hosts",
            format!(
                "{hosts:?} is not a hostlist (e.g. i[1-3] or a1,b2): {}",
                why.trim()
            ),
        )
    })?;
    if list.is_empty() {
        return Err(Invalid::new("hosts", "the hostlist names no host"));
    }
    if list.len() > max {
        return Err(too_many(list.len() as u128, max));
    }
    Ok(list)
}

fn too_many(n: u128, max: usize) -> Invalid {
    Invalid::new(
        "hosts",
        format!("{n} hosts is more than the {max} one launch may start ([web] max_hosts)"),
    )
}

/// How many hosts a hostlist names at most (ranges multiplied out), without expanding it;
/// `None` when it does not look like one (the parser then says why).
fn count_upper_bound(list: &str) -> Option<u128> {
    let mut total: u128 = 0;
    let mut item: u128 = 1;
    let mut group: Option<u128> = None;
    let mut range = String::new();
    let range_size = |r: &str| -> Option<u128> {
        let r = r.trim();
        match r.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (
                    lo.trim().parse::<u128>().ok()?,
                    hi.trim().parse::<u128>().ok()?,
                );
                Some(hi.saturating_sub(lo).saturating_add(1))
            }
            None => r.parse::<u128>().ok().map(|_| 1),
        }
    };
    for c in list.chars() {
        match (c, group) {
            ('[', None) => group = Some(0),
            (']', Some(g)) => {
                let g = g.saturating_add(range_size(&range)?);
                item = item.saturating_mul(g);
                range.clear();
                group = None;
            }
            (',', Some(g)) => {
                group = Some(g.saturating_add(range_size(&range)?));
                range.clear();
            }
            (',', None) => {
                total = total.saturating_add(item);
                item = 1;
            }
            (_, Some(_)) => range.push(c),
            _ => {}
        }
    }
    if group.is_some() {
        return None;
    }
    Some(total.saturating_add(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_multiplies_ranges_without_expanding() {
        assert_eq!(count_upper_bound("i[1-3]"), Some(3));
        assert_eq!(count_upper_bound("a1,b2"), Some(2));
        assert_eq!(count_upper_bound("r[1-2]n[01-10]"), Some(20));
        assert_eq!(count_upper_bound("i[1-3,7],j"), Some(5));
        assert_eq!(
            count_upper_bound("i[1-99999999999999999999]"),
            Some(99999999999999999999)
        );
        assert_eq!(count_upper_bound("i[1-"), None);
    }

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
}

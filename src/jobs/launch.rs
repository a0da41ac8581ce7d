//! `cm.launch(server, recipe, kind, hosts, user)`: a recipe goes running → deploy → active, or
//! runs its `command` when the recipe has one.

use serde_json::{Map, Value};

use super::args::{Bound, Param};
use crate::config::hostlist::{self, HostlistError};
use crate::config::Config;

pub const STEPS: &[&str] = &["running", "deploy", "active"];

/// Its parameters, as a Celery client may pass them (by keyword, or in this order).
pub fn params() -> &'static [Param] {
    const PARAMS: &[Param] = &[
        Param::required("server"),
        Param::required("recipe"),
        Param::optional("kind"),
        Param::optional("hosts"),
        Param::optional("user"),
    ];
    PARAMS
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub server: String,
    pub recipe: String,
    /// vm or baremetal
    pub kind: String,
    /// The host (or hostlist) this job launches on.
    pub hosts: String,
    pub user: Option<String>,
}

impl Launch {
    pub fn from_bound(b: &Bound) -> Self {
        Self {
            server: b.text("server").unwrap_or_default(),
            recipe: b.text("recipe").unwrap_or_default(),
            kind: b.text("kind").unwrap_or_else(|| "vm".into()),
            hosts: b.text("hosts").unwrap_or_default(),
            user: b.text("user"),
        }
    }

    pub fn kwargs(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("server".into(), self.server.clone().into());
        m.insert("recipe".into(), self.recipe.clone().into());
        m.insert("kind".into(), self.kind.clone().into());
        m.insert("hosts".into(), self.hosts.clone().into());
        m.insert(
            "user".into(),
            self.user.clone().map_or(Value::Null, Value::from),
        );
        m
    }

    /// The values a recipe's command can use: `{server}`, `{recipe}`, `{kind}`, `{host}`,
    /// `{user}` (empty when none was given).
    pub fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("server", self.server.clone()),
            ("recipe", self.recipe.clone()),
            ("kind", self.kind.clone()),
            ("host", self.hosts.clone()),
            ("user", self.user.clone().unwrap_or_default()),
        ]
    }

    /// Why `hosts` is no hostlist this config accepts, if it is not: sized before anything
    /// reads it further, as every other path that takes a hostlist does. Empty is allowed (a
    /// Celery client may leave it out).
    pub fn hosts_problem(&self, cfg: &Config) -> Option<String> {
        let hosts = self.hosts.as_str();
        if hosts.is_empty() {
            return None;
        }
        let max = cfg.limits.max_hosts;
        let checked = match hostlist::size(hosts) {
            Err(e) => Err(e),
            Ok(size) if size.hosts > max as u128 => Err(HostlistError::TooMany {
                hosts: size.hosts,
                max,
            }),
            // A plain name (the usual: one job per host) needs no expanding to be sure of.
            Ok(_) if !hosts.contains(['[', ',']) => Ok(()),
            Ok(_) => hostlist::expand(hosts, max).map(|_| ()),
        };
        checked.err().map(|e| {
            let limit = match e {
                HostlistError::TooMany { .. } => " ([limits] max_hosts)",
                _ => "",
            };
            format!(
                "{}() argument 'hosts' {} {e}{limit}",
                super::LAUNCH,
                hostlist::quoted(hosts)
            )
        })
    }

    pub fn refusal(&self, cfg: &Config) -> Option<String> {
        if !cfg.servers.contains_key(&self.server) {
            return Some(format!("unknown server {:?}", self.server));
        }
        if !cfg.recipes.contains_key(&self.recipe) {
            return Some(format!("unknown recipe {:?}", self.recipe));
        }
        None
    }

    pub fn fails_at(&self, cfg: &Config, step: &str) -> Option<String> {
        let marked = cfg.recipes.get(&self.recipe).is_some_and(|r| r.fail);
        (marked && step == "deploy").then(|| {
            format!(
                "recipe {:?} failed to deploy on {} ({})",
                self.recipe, self.hosts, self.server
            )
        })
    }
}

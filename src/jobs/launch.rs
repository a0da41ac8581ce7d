//! `cm.launch(server, recipe, kind, hosts, user)`: a recipe goes running → deploy → active.

use serde_json::{Map, Value};

use super::{arg_str, JobError, LAUNCH};
use crate::config::Config;
use crate::protocol::TaskMessage;

pub const STEPS: &[&str] = &["running", "deploy", "active"];

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
    pub fn from_message(msg: &TaskMessage) -> Result<Self, JobError> {
        let missing = |what: &str| JobError::BadArgs {
            task: LAUNCH,
            why: format!("missing {what} (kwargs: server, recipe, kind, hosts)"),
        };
        Ok(Self {
            server: arg_str(msg, LAUNCH, 0, "server")?.ok_or_else(|| missing("server"))?,
            recipe: arg_str(msg, LAUNCH, 1, "recipe")?.ok_or_else(|| missing("recipe"))?,
            kind: arg_str(msg, LAUNCH, 2, "kind")?.unwrap_or_else(|| "vm".into()),
            hosts: arg_str(msg, LAUNCH, 3, "hosts")?.unwrap_or_default(),
            user: arg_str(msg, LAUNCH, 4, "user")?,
        })
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

//! `fabfile.toml` as written: the serde schema, every table closed to unknown keys.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

pub(super) use super::limits::RawLimits;
pub(super) use super::schedules::{RawRetention, RawSchedule};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) broker: RawBroker,
    #[serde(default)]
    pub(super) paths: RawPaths,
    #[serde(default)]
    pub(super) worker: RawWorker,
    #[serde(default)]
    pub(super) queues: IndexMap<String, Spanned<RawQueue>>,
    #[serde(default)]
    pub(super) simulation: RawSimulation,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) web: RawWeb,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) workflows: RawWorkflows,
    pub(super) servers: Option<IndexMap<String, Described>>,
    pub(super) recipes: Option<IndexMap<String, Spanned<RawCommand>>>,
    #[serde(default)]
    pub(super) tasks: IndexMap<String, Spanned<RawCommand>>,
    pub(super) provision: Option<Spanned<RawCommand>>,
    #[serde(default)]
    pub(super) schedules: IndexMap<String, Spanned<RawSchedule>>,
    pub(super) retention: Option<RawRetention>,
}

/// `[workflows]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflows {
    pub(super) max_parents: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    #[serde(default = "default_broker_url")]
    pub(super) url: Spanned<UrlList>,
    /// The URL's password, from the first line of this file.
    pub(super) password_file: Option<Spanned<PathBuf>>,
    /// `amqps://` only: the CAs to trust instead of the system's (PEM).
    pub(super) ca_file: Option<Spanned<PathBuf>>,
    /// `amqps://` only: a client certificate and its key (PEM), for mutual TLS.
    pub(super) cert_file: Option<Spanned<PathBuf>>,
    pub(super) key_file: Option<Spanned<PathBuf>>,
    /// `amqps://` only: false accepts a certificate of a trusted CA that names another host.
    pub(super) verify_hostname: Option<Spanned<bool>>,
}

/// One broker URL, or the nodes of a cluster: a list, or one string of URLs separated by `;`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum UrlList {
    One(String),
    Many(Vec<String>),
}

impl UrlList {
    /// The URLs, `;`-separated, as `CM_BROKER_URL` and Celery's `broker_url` write them.
    pub(super) fn joined(&self) -> String {
        match self {
            UrlList::One(url) => url.clone(),
            UrlList::Many(urls) => urls.join(";"),
        }
    }
}

impl Default for RawBroker {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, default_broker_url().into_inner()),
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_hostname: None,
        }
    }
}

pub(super) fn default_broker_url() -> Spanned<UrlList> {
    Spanned::new(
        0..0,
        UrlList::One("amqp://guest:guest@127.0.0.1:5672/%2f".to_string()),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaths {
    pub(super) pid_dir: Option<PathBuf>,
    pub(super) log_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    pub(super) stop_grace_seconds: Option<Spanned<f64>>,
    pub(super) start_timeout_seconds: Option<Spanned<f64>>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) allow_root: Option<bool>,
    pub(super) node_host: Option<String>,
    pub(super) max_message_bytes: Option<Spanned<i64>>,
    pub(super) lease_after_seconds: Option<Spanned<f64>>,
    pub(super) lease_seconds: Option<Spanned<f64>>,
    pub(super) send_events: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) workers: Spanned<WorkerList>,
    pub(super) tasks: Option<Spanned<Vec<String>>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) prefetch: Option<Spanned<i64>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_backoff_seconds: Option<Spanned<f64>>,
    pub(super) queue_type: Option<Spanned<String>>,
    pub(super) delivery_limit: Option<Spanned<i64>>,
    pub(super) hand_back_after_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum WorkerList {
    Pattern(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSimulation {
    pub(super) step_seconds: Option<Spanned<[f64; 2]>>,
    pub(super) failure_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<Spanned<String>>,
    pub(super) busy_timeout_ms: Option<Spanned<i64>>,
    /// A `postgres://` URL's password, from the first line of this file.
    pub(super) password_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    /// `cm server start|stop` run the detached web server too unless this is false.
    pub(super) enabled: Option<bool>,
    pub(super) bind: Option<String>,
    pub(super) token: Option<String>,
    pub(super) max_hosts: Option<Spanned<i64>>,
    /// PEM files: with both, the web serves HTTPS.
    pub(super) tls_cert: Option<Spanned<PathBuf>>,
    pub(super) tls_key: Option<Spanned<PathBuf>>,
}

/// A server or a recipe: what the launch page offers, with the text shown beside it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    #[serde(default)]
    pub description: String,
    /// A recipe marked to fail makes every launch of it end in FAILURE (for drills and tests).
    #[serde(default)]
    pub fail: bool,
    /// A recipe's command (`[recipes.NAME] command`); without one, its launches are simulated.
    #[serde(skip)]
    pub command: Option<std::sync::Arc<super::CommandSpec>>,
}

/// A command's keys as written, in a `[tasks."NAME"]`, a `[recipes.NAME]` or `[provision]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    pub(super) command: Option<Spanned<Vec<String>>>,
    /// Positional arguments, in order; keyword arguments bind by name.
    pub(super) params: Option<Spanned<Vec<String>>>,
    pub(super) time_limit: Option<Spanned<f64>>,
    pub(super) kill_grace: Option<Spanned<f64>>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) env: Option<IndexMap<String, String>>,
    pub(super) allow_options: Option<bool>,
    pub(super) keep_children: Option<bool>,
    /// Flow control (`config::flow`): at most this many starts per period, everywhere.
    pub(super) rate_limit: Option<Spanned<String>>,
    /// Jobs whose key renders alike share `key_limit` slots (1 unless given).
    pub(super) concurrency_key: Option<Spanned<String>>,
    pub(super) key_limit: Option<Spanned<i64>>,
    /// Only in `[recipes.NAME]`.
    pub(super) description: Option<String>,
    pub(super) fail: Option<bool>,
    /// The policy (`config::policy`): unique jobs and retries.
    pub(super) unique: Option<Spanned<String>>,
    pub(super) unique_while: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_backoff: Option<Spanned<f64>>,
    pub(super) retry_max_delay: Option<Spanned<f64>>,
    pub(super) retry_jitter: Option<bool>,
    pub(super) retry_on_exit: Option<Spanned<Vec<i64>>>,
}

impl RawCommand {
    /// Whether any key of the policy (`config::policy`) is set.
    pub(super) fn has_policy(&self) -> bool {
        self.unique.is_some()
            || self.unique_while.is_some()
            || self.retries.is_some()
            || self.retry_backoff.is_some()
            || self.retry_max_delay.is_some()
            || self.retry_jitter.is_some()
            || self.retry_on_exit.is_some()
    }
}

//! `fabfile.toml`: the schema, its defaults, validation with line and column, env overrides.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

mod defaults;
pub mod flow;
pub mod hostlist;
pub mod limits;
mod names;
pub mod policy;
mod queues;
mod raw;
mod schedules;
mod secrets;
mod store_location;
mod tasks;
pub mod urls;
mod web;

pub use raw::Described;
pub use schedules::Retention;
pub use secrets::BrokerTls;
pub use store_location::StoreLocation;
pub use tasks::{CommandSpec, BUILT_IN, PROVISION_VALUES, RECIPE_VALUES};
pub use web::WebTls;

pub use limits::Limits;

use limits::in_range;
use raw::RawConfig;

/// Where the configuration is looked for when neither `--config` nor `$CM_CONFIG` is given.
const SYSTEM_CONFIG: &str = "/etc/cm/fabfile.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no configuration file: pass --config PATH, set CM_CONFIG, or create ./fabfile.toml (also looked for {SYSTEM_CONFIG})")]
    NotFound,
    #[error("cannot read config {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Rule { path: PathBuf, message: String },
}

// ---------- the resolved configuration ----------

#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file; workers are matched to their config by it.
    pub path: PathBuf,
    /// `[broker] url` (or `CM_BROKER_URL`), with `[broker] password_file`'s password in it:
    /// shown only through `urls::redact`.
    pub broker_url: String,
    /// `[broker] ca_file`, `cert_file`, `key_file`, `verify_hostname`: TLS for `amqps://`.
    pub broker_tls: BrokerTls,
    pub pid_dir: PathBuf,
    pub log_dir: PathBuf,
    pub stop_grace: Duration,
    pub start_timeout: Duration,
    pub user: Option<String>,
    pub group: Option<String>,
    pub allow_root: bool,
    /// A message body over this goes to the dead letters unrun (`[worker] max_message_bytes`).
    pub max_message_bytes: usize,
    /// A job still running after this is acked and held by a lease in the store instead
    /// (`[worker] lease_after_seconds`): the broker's consumer_timeout never sees it.
    pub lease_after: Duration,
    /// How long a lease lasts unless renewed (`[worker] lease_seconds`).
    pub lease: Duration,
    /// The `@host` part of node names (`p1@host`), as Celery names its nodes.
    pub node_host: String,
    /// Whether workers send Celery's task events from the start (`celery worker -E`); a
    /// monitor can still turn them on and off with `enable_events` / `disable_events`.
    pub send_events: bool,
    pub queues: Vec<QueueConfig>,
    pub simulation: Simulation,
    /// `[store] url` (or `CM_STORE_URL`), parsed: the only place a store URL is read.
    pub store_url: StoreLocation,
    /// How long an SQLite write waits for the lock before it fails (and the job is not acked).
    pub store_busy_timeout: Duration,
    /// Whether `cm server start` starts the web server (`[web] enabled`, default true).
    pub web_enabled: bool,
    pub web_bind: String,
    pub web_token: Option<String>,
    /// The most jobs one web form or API launch may publish (`[web] max_hosts`, else
    /// `[limits] max_hosts`).
    pub web_max_hosts: usize,
    /// `[web] tls_cert` and `tls_key`: the web serves HTTPS with them.
    pub web_tls: Option<WebTls>,
    /// `[limits]`: what one input may ask for.
    pub limits: Limits,
    /// `[workflows] max_parents`: the most parents one job may wait for (`--after`).
    pub max_parents: usize,
    pub servers: IndexMap<String, Described>,
    pub recipes: IndexMap<String, Described>,
    /// `[tasks."NAME"]`: the commands a queue's `tasks` may name besides cm's own.
    pub tasks: IndexMap<String, std::sync::Arc<CommandSpec>>,
    /// `[provision] command`: provisioning runs it instead of the simulation.
    pub provision: Option<std::sync::Arc<CommandSpec>>,
    /// `rate_limit`, `concurrency_key` of tasks, recipes and provisioning (Flow control).
    pub flow: flow::FlowRules,
    /// `[schedules.NAME]`, in file order: what every worker fires when due.
    pub schedules: IndexMap<String, crate::schedules::Schedule>,
    /// `[retention]`: how long finished jobs stay; `None` keeps them all.
    pub retention: Option<Retention>,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub workers: Vec<String>,
    pub tasks: Vec<String>,
    pub concurrency: u16,
    pub prefetch: u16,
    /// A failed job is published again (state RETRY) up to this many times.
    pub retries: u32,
    /// Wait before retry n is `retry_backoff * 2^n`.
    pub retry_backoff: Duration,
    /// `quorum` for a replicated queue on a RabbitMQ cluster; `None` is a classic queue.
    pub quorum: bool,
    /// A quorum queue's message returned this many times (its `x-delivery-count`) goes to the
    /// dead letters instead of running again (`delivery_limit`, default 20).
    pub delivery_limit: u32,
    /// Fair dispatch: when every job slot stays busy this long, the prefetched jobs go back to
    /// the queue for an idle worker (`hand_back_after_ms`, default 50; zero never).
    pub hand_back_after: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Simulation {
    pub step_min: f64,
    pub step_max: f64,
    pub failure_rate: f64,
}

/// One configured worker and the queue it consumes.
#[derive(Debug, Clone, Copy)]
pub struct WorkerRef<'a> {
    pub name: &'a str,
    pub queue: &'a QueueConfig,
}

impl Config {
    /// Finds the file (`--config`/`$CM_CONFIG`, `./fabfile.toml`, `/etc/cm/fabfile.toml`) and loads it.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => [Path::new("fabfile.toml"), Path::new(SYSTEM_CONFIG)]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or(ConfigError::NotFound)?
                .to_path_buf(),
        };
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        };
        let path = std::fs::canonicalize(path).map_err(read_err)?;
        let text = std::fs::read_to_string(&path).map_err(read_err)?;
        Self::parse(&path, &text)
    }

    /// Parses `text` as the file at `path` (absolute); env overrides apply on top.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let broker_url = env("CM_BROKER_URL").unwrap_or_else(|| raw.broker.url.get_ref().joined());
        let urls = crate::config::urls::split_urls(&broker_url);
        if urls.is_empty() {
            return Err(at(
                Some(raw.broker.url.span()),
                "broker.url: no URL (expected amqp://user:pass@host:5672/vhost, or a list of them)"
                    .into(),
            ));
        }
        for url in &urls {
            if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
                return Err(at(
                    Some(raw.broker.url.span()),
                    format!(
                        "broker.url: invalid AMQP URL {:?}: {e} (expected amqp://user:pass@host:5672/vhost)",
                        crate::config::urls::redact(url)
                    ),
                ));
            }
        }

        let broker_tls = secrets::broker_tls(
            &secrets::RawTls {
                ca_file: raw.broker.ca_file.as_ref(),
                cert_file: raw.broker.cert_file.as_ref(),
                key_file: raw.broker.key_file.as_ref(),
                verify_hostname: raw.broker.verify_hostname.as_ref(),
            },
            &urls,
            base,
            &at,
        )?;
        let broker_url = match &raw.broker.password_file {
            None => broker_url,
            Some(file) => {
                let key = "broker.password_file";
                let password = secrets::read_password(file, key, base, &at)?;
                urls.iter()
                    .map(|u| secrets::with_password(u, &password, key))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|message| at(Some(file.span()), message))?
                    .join(";")
            }
        };

        if raw.queues.is_empty() {
            return Err(ConfigError::Rule {
                path: path.to_path_buf(),
                message:
                    "no queues configured: add a [queues.NAME] table with `workers` and `tasks`"
                        .into(),
            });
        }
        let limits = limits::resolve(&at, &raw.limits)?;
        let node_host = env("CM_NODE_HOST")
            .or(raw.worker.node_host)
            .unwrap_or_else(local_hostname);
        let queues = queues::resolve(&raw.queues, &limits, &node_host, &at)?;
        queues::check_tasks(&raw.queues, &raw.tasks, &at)?;
        let tasks = tasks::resolve(&raw.tasks, &queues, base, &at)?;
        let schedules = schedules::resolve(&raw.schedules, &queues, &at)?;
        let retention = schedules::retention(raw.retention.as_ref(), &at)?;
        let recipes = match &raw.recipes {
            None => defaults::recipes(),
            Some(recipes) => tasks::recipes(recipes, base, &at)?,
        };
        let provision = match &raw.provision {
            None => None,
            Some(table) => tasks::provision(table, base, &at)?,
        };
        let flow = flow::resolve(&raw.tasks, &tasks, &raw.recipes, &raw.provision, &at)?;

        let (step_min, step_max) = match &raw.simulation.step_seconds {
            Some(s) => {
                let [lo, hi] = *s.get_ref();
                if !(limits::SECONDS.contains(&lo) && limits::SECONDS.contains(&hi) && lo <= hi) {
                    return Err(at(
                        Some(s.span()),
                        format!(
                            "simulation.step_seconds must be [min, max] with {} <= min <= max <= {} (got [{lo}, {hi}])",
                            limits::SECONDS.start(),
                            limits::SECONDS.end()
                        ),
                    ));
                }
                (lo, hi)
            }
            None => (1.0, 3.0),
        };
        let failure_rate = in_range(
            &at,
            "simulation.failure_rate",
            raw.simulation.failure_rate.as_ref(),
            limits::RATE,
        )?
        .unwrap_or(0.0);
        let seconds = |v: Option<&Spanned<f64>>, default: f64, key: &str| {
            in_range(&at, &format!("worker.{key}"), v, limits::SECONDS)
                .map(|s| Duration::from_secs_f64(s.unwrap_or(default)))
        };
        let busy_ms = in_range(
            &at,
            "store.busy_timeout_ms",
            raw.store.busy_timeout_ms.as_ref(),
            limits::BUSY_MS,
        )?
        .unwrap_or(10_000);
        let web_max_hosts = in_range(
            &at,
            "web.max_hosts",
            raw.web.max_hosts.as_ref(),
            limits::MAX_HOSTS,
        )?
        .map_or(limits.max_hosts, |n| {
            usize::try_from(n).unwrap_or(limits.max_hosts)
        });
        let web_tls = web::tls(&raw.web, base, &at)?;
        let max_parents = in_range(
            &at,
            "workflows.max_parents",
            raw.workflows.max_parents.as_ref(),
            limits::MAX_PARENTS,
        )?
        .map_or(limits::DEFAULT_MAX_PARENTS, |n| {
            usize::try_from(n).unwrap_or(limits::DEFAULT_MAX_PARENTS)
        });

        let pid_dir = env("CM_PID_DIR")
            .map(PathBuf::from)
            .or(raw.paths.pid_dir)
            .map_or_else(|| base.join("var/run"), resolve);
        let log_dir = env("CM_LOG_DIR")
            .map(PathBuf::from)
            .or(raw.paths.log_dir)
            .map_or_else(|| base.join("var/log"), resolve);
        let store_password = match &raw.store.password_file {
            None => None,
            Some(file) => Some((
                secrets::read_password(file, "store.password_file", base, &at)?,
                file.span(),
            )),
        };
        let with_store_password = |url: &str| match &store_password {
            None => Ok(url.to_string()),
            Some((password, span)) => secrets::with_password(url, password, "store.password_file")
                .map_err(|message| at(Some(span.clone()), message)),
        };
        let store_url = match (env("CM_STORE_URL"), &raw.store.url) {
            (Some(url), _) => {
                StoreLocation::parse(&with_store_password(&url)?, base).map_err(|message| {
                    ConfigError::Rule {
                        path: path.to_path_buf(),
                        message: format!("CM_STORE_URL (for [store] url): {message}"),
                    }
                })?
            }
            (None, Some(url)) => {
                StoreLocation::parse(&with_store_password(url.get_ref())?, base)
                    .map_err(|message| at(Some(url.span()), format!("[store] url: {message}")))?
            }
            (None, None) => StoreLocation::SqliteFile(base.join("var/cm.db")),
        };

        Ok(Self {
            path: path.to_path_buf(),
            broker_url,
            broker_tls,
            pid_dir,
            log_dir,
            stop_grace: seconds(
                raw.worker.stop_grace_seconds.as_ref(),
                30.0,
                "stop_grace_seconds",
            )?,
            start_timeout: seconds(
                raw.worker.start_timeout_seconds.as_ref(),
                30.0,
                "start_timeout_seconds",
            )?,
            user: raw.worker.user.filter(|u| !u.is_empty()),
            group: raw.worker.group.filter(|g| !g.is_empty()),
            allow_root: raw.worker.allow_root.unwrap_or(false),
            max_message_bytes: in_range(
                &at,
                "worker.max_message_bytes",
                raw.worker.max_message_bytes.as_ref(),
                limits::MESSAGE_BYTES,
            )?
            .map_or(1 << 20, |n| n as usize),
            lease_after: seconds_in(
                &at,
                "worker.lease_after_seconds",
                raw.worker.lease_after_seconds.as_ref(),
                limits::LEASE_AFTER,
                60.0,
            )?,
            lease: seconds_in(
                &at,
                "worker.lease_seconds",
                raw.worker.lease_seconds.as_ref(),
                limits::LEASE,
                30.0,
            )?,
            node_host,
            send_events: raw.worker.send_events.unwrap_or(false),
            queues,
            simulation: Simulation {
                step_min,
                step_max,
                failure_rate,
            },
            store_url,
            store_busy_timeout: Duration::from_millis(busy_ms.unsigned_abs()),
            web_enabled: raw.web.enabled.unwrap_or(true),
            web_bind: raw.web.bind.unwrap_or_else(|| "127.0.0.1:8080".into()),
            web_token: raw.web.token.filter(|t| !t.is_empty()),
            web_max_hosts,
            web_tls,
            limits,
            max_parents,
            servers: raw.servers.unwrap_or_else(defaults::servers),
            recipes,
            tasks,
            provision,
            flow,
            schedules,
            retention,
        })
    }

    /// Every configured worker, in file order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerRef<'_>> {
        self.queues.iter().flat_map(|queue| {
            queue
                .workers
                .iter()
                .map(move |name| WorkerRef { name, queue })
        })
    }

    pub fn worker(&self, name: &str) -> Option<WorkerRef<'_>> {
        self.workers().find(|w| w.name == name)
    }

    /// The queue a publisher routes `task` to: the first queue that lists it.
    pub fn queue_for_task(&self, task: &str) -> Option<&QueueConfig> {
        self.queues
            .iter()
            .find(|q| q.tasks.iter().any(|t| t == task))
    }

    pub fn pid_file(&self, worker: &str) -> PathBuf {
        self.pid_dir.join(format!("celery@{worker}.pid"))
    }

    pub fn log_file(&self, worker: &str) -> PathBuf {
        self.log_dir.join(format!("celery@{worker}.log"))
    }

    pub fn stats_file(&self, worker: &str) -> PathBuf {
        self.pid_dir.join(format!("celery@{worker}.stats"))
    }

    pub fn node_name(&self, worker: &str) -> String {
        format!("{worker}@{}", self.node_host)
    }
}

/// A number of seconds in `range`, or `default`, as a duration.
fn seconds_in(
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
    key: &str,
    value: Option<&Spanned<f64>>,
    range: std::ops::RangeInclusive<f64>,
    default: f64,
) -> Result<Duration, ConfigError> {
    in_range(at, key, value, range).map(|s| Duration::from_secs_f64(s.unwrap_or(default)))
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;

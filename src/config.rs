//! `fabfile.toml`: the schema, its defaults, validation with line and column, env overrides.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

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

// ---------- the file as written ----------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    queues: IndexMap<String, Spanned<RawQueue>>,
    #[serde(default)]
    simulation: RawSimulation,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    web: RawWeb,
    servers: Option<IndexMap<String, Described>>,
    recipes: Option<IndexMap<String, Described>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    #[serde(default = "default_broker_url")]
    url: Spanned<String>,
}

impl Default for RawBroker {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, default_broker_url().into_inner()),
        }
    }
}

fn default_broker_url() -> Spanned<String> {
    Spanned::new(0..0, "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    pid_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    stop_grace_seconds: Option<Spanned<f64>>,
    start_timeout_seconds: Option<Spanned<f64>>,
    user: Option<String>,
    group: Option<String>,
    allow_root: Option<bool>,
    node_host: Option<String>,
    send_events: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    workers: Spanned<WorkerList>,
    #[serde(default)]
    tasks: Vec<String>,
    concurrency: Option<Spanned<i64>>,
    prefetch: Option<Spanned<i64>>,
    retries: Option<Spanned<i64>>,
    retry_backoff_seconds: Option<Spanned<f64>>,
    queue_type: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WorkerList {
    Pattern(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    step_seconds: Option<Spanned<[f64; 2]>>,
    failure_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    busy_timeout_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    /// `cm server start|stop` run the detached web server too unless this is false.
    enabled: Option<bool>,
    bind: Option<String>,
    token: Option<String>,
    max_hosts: Option<Spanned<i64>>,
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
}

// ---------- the resolved configuration ----------

#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file; workers are matched to their config by it.
    pub path: PathBuf,
    pub broker_url: String,
    pub pid_dir: PathBuf,
    pub log_dir: PathBuf,
    pub stop_grace: Duration,
    pub start_timeout: Duration,
    pub user: Option<String>,
    pub group: Option<String>,
    pub allow_root: bool,
    /// The `@host` part of node names (`p1@host`), as Celery names its nodes.
    pub node_host: String,
    /// Whether workers send Celery's task events from the start (`celery worker -E`); a
    /// monitor can still turn them on and off with `enable_events` / `disable_events`.
    pub send_events: bool,
    pub queues: Vec<QueueConfig>,
    pub simulation: Simulation,
    pub store_url: String,
    /// How long an SQLite write waits for the lock before it fails (and the job is not acked).
    pub store_busy_timeout: Duration,
    /// Whether `cm server start` starts the web server (`[web] enabled`, default true).
    pub web_enabled: bool,
    pub web_bind: String,
    pub web_token: Option<String>,
    /// The most jobs one web form or API launch may publish.
    pub web_max_hosts: usize,
    pub servers: IndexMap<String, Described>,
    pub recipes: IndexMap<String, Described>,
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
        let broker_url = env("CM_BROKER_URL").unwrap_or_else(|| raw.broker.url.get_ref().clone());
        if let Err(e) = broker_url.parse::<lapin::uri::AMQPUri>() {
            return Err(at(
                Some(raw.broker.url.span()),
                format!("broker.url: invalid AMQP URL {broker_url:?}: {e} (expected amqp://user:pass@host:5672/vhost)"),
            ));
        }

        if raw.queues.is_empty() {
            return Err(ConfigError::Rule {
                path: path.to_path_buf(),
                message:
                    "no queues configured: add a [queues.NAME] table with `workers` and `tasks`"
                        .into(),
            });
        }
        let mut queues: Vec<QueueConfig> = Vec::new();
        for (name, spanned) in &raw.queues {
            let q = spanned.get_ref();
            let workers_span = q.workers.span();
            let workers = match q.workers.get_ref() {
                WorkerList::List(list) => list.clone(),
                WorkerList::Pattern(p) => hostlist_parser::parse(p).map_err(|e| {
                    at(
                        Some(workers_span.clone()),
                        format!("queues.{name}.workers: bad hostlist {p:?}: {e}"),
                    )
                })?,
            };
            if workers.is_empty() {
                return Err(at(
                    Some(workers_span),
                    format!("queues.{name}.workers: no worker names"),
                ));
            }
            for w in &workers {
                if !valid_name(w) {
                    return Err(at(Some(workers_span.clone()), format!(
                        "queues.{name}.workers: {w:?} is not a valid worker name (letters, digits, '-', '_', '.')"
                    )));
                }
                if let Some(other) = queues.iter().find(|o| o.workers.contains(w)) {
                    return Err(at(
                        Some(workers_span.clone()),
                        format!(
                            "queues.{name}.workers: worker {w:?} is also in queues.{}; each worker consumes one queue",
                            other.name
                        ),
                    ));
                }
            }
            if !valid_name(name) {
                return Err(at(
                    Some(spanned.span()),
                    format!("queues: {name:?} is not a valid queue name (letters, digits, '-', '_', '.')"),
                ));
            }
            let quorum = match &q.queue_type {
                None => false,
                Some(t) if t.get_ref() == "classic" => false,
                Some(t) if t.get_ref() == "quorum" => true,
                Some(t) => {
                    return Err(at(
                        Some(t.span()),
                        format!("queues.{name}.queue_type must be \"classic\" or \"quorum\""),
                    ))
                }
            };
            let key = |k: &str| format!("queues.{name}.{k}");
            let concurrency = in_range(
                &at,
                &key("concurrency"),
                q.concurrency.as_ref(),
                limits::CONCURRENCY,
            )?
            .map_or(1, |n| n as u16);
            // Celery's default prefetch multiplier: the next jobs are at hand while one is acked.
            let prefetch = in_range(&at, &key("prefetch"), q.prefetch.as_ref(), limits::PREFETCH)?
                .map_or(concurrency.saturating_mul(4), |n| n as u16)
                .max(concurrency);
            let retries = in_range(&at, &key("retries"), q.retries.as_ref(), limits::RETRIES)?
                .map_or(0, |n| n as u32);
            let retry_backoff = in_range(
                &at,
                &key("retry_backoff_seconds"),
                q.retry_backoff_seconds.as_ref(),
                limits::SECONDS,
            )?
            .unwrap_or(1.0);
            queues.push(QueueConfig {
                name: name.clone(),
                workers,
                tasks: q.tasks.clone(),
                concurrency,
                prefetch,
                quorum,
                retries,
                retry_backoff: Duration::from_secs_f64(retry_backoff),
            });
        }

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
        let max_hosts = in_range(
            &at,
            "web.max_hosts",
            raw.web.max_hosts.as_ref(),
            limits::MAX_HOSTS,
        )?
        .unwrap_or(1000);

        let pid_dir = env("CM_PID_DIR")
            .map(PathBuf::from)
            .or(raw.paths.pid_dir)
            .map_or_else(|| base.join("var/run"), resolve);
        let log_dir = env("CM_LOG_DIR")
            .map(PathBuf::from)
            .or(raw.paths.log_dir)
            .map_or_else(|| base.join("var/log"), resolve);
        let store_url = env("CM_STORE_URL")
            .or(raw.store.url)
            .unwrap_or_else(|| "sqlite://var/cm.db".into());
        let store_url = match store_url.strip_prefix("sqlite://") {
            Some(p) => format!("sqlite://{}", resolve(PathBuf::from(p)).display()),
            None => store_url,
        };

        Ok(Self {
            path: path.to_path_buf(),
            broker_url,
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
            node_host: env("CM_NODE_HOST")
                .or(raw.worker.node_host)
                .unwrap_or_else(local_hostname),
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
            web_max_hosts: usize::try_from(max_hosts).unwrap_or(1000),
            servers: raw.servers.unwrap_or_else(default_servers),
            recipes: raw.recipes.unwrap_or_else(default_recipes),
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

/// The allowed range of every number in the file (docs/configuration.md lists the same).
pub mod limits {
    use std::ops::RangeInclusive;

    /// Any duration in seconds: a day at most.
    pub const SECONDS: RangeInclusive<f64> = 0.0..=86_400.0;
    pub const RATE: RangeInclusive<f64> = 0.0..=1.0;
    pub const CONCURRENCY: RangeInclusive<i64> = 1..=10_000;
    pub const PREFETCH: RangeInclusive<i64> = 1..=65_535;
    pub const RETRIES: RangeInclusive<i64> = 0..=10_000;
    /// An hour at most.
    pub const BUSY_MS: RangeInclusive<i64> = 0..=3_600_000;
    pub const MAX_HOSTS: RangeInclusive<i64> = 1..=1_000_000;
}

/// The value of an optional number, if it lies in `range`; else an error at its place naming
/// `key` and the range (NaN and infinities are in no range).
fn in_range<T>(
    at: &impl Fn(Option<Range<usize>>, String) -> ConfigError,
    key: &str,
    value: Option<&Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, ConfigError>
where
    T: PartialOrd + Copy + std::fmt::Display + std::fmt::Debug,
{
    match value {
        None => Ok(None),
        Some(v) if range.contains(v.get_ref()) => Ok(Some(*v.get_ref())),
        Some(v) => Err(at(
            Some(v.span()),
            format!(
                // Debug: a float as written (1e99, not a hundred digits).
                "{key} must be from {} to {} (got {:?})",
                range.start(),
                range.end(),
                v.get_ref()
            ),
        )),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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

fn described(items: &[(&str, &str)]) -> IndexMap<String, Described> {
    items
        .iter()
        .map(|(name, description)| {
            (
                name.to_string(),
                Described {
                    description: description.to_string(),
                    fail: false,
                },
            )
        })
        .collect()
}

/// The servers the original launcher offered.
fn default_servers() -> IndexMap<String, Described> {
    described(&[
        ("india_openstack_essex", "FutureGrid india, OpenStack Essex"),
        (
            "sierra_openstack_grizzly",
            "FutureGrid sierra, OpenStack Grizzly",
        ),
    ])
}

/// The recipes the original launcher offered.
fn default_recipes() -> IndexMap<String, Described> {
    described(&[
        (
            "Slurm Cluster",
            "A Slurm batch cluster: one controller, compute nodes",
        ),
        (
            "Hadoop",
            "A Hadoop cluster: HDFS name node and data nodes, YARN",
        ),
        (
            "Ganglia",
            "Ganglia monitoring: gmetad and a gmond on every host",
        ),
        (
            "Nagios",
            "Nagios monitoring server with host and service checks",
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[paths]
pid_dir = "var/run"
log_dir = "var/log"
[queues.provisioner]
workers = "p[1-2]"
tasks = ["cm.provision"]
concurrency = 1
[queues.launcher]
workers = ["l1", "l2"]
tasks = ["cm.launch"]
concurrency = 1
[simulation]
step_seconds = [0, 0]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/cm/fabfile.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults_and_expands_hostlists() -> Result<(), ConfigError> {
        let c = parse(MINIMAL)?;
        let names: Vec<_> = c
            .workers()
            .map(|w| (w.name, w.queue.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("p1", "provisioner"),
                ("p2", "provisioner"),
                ("l1", "launcher"),
                ("l2", "launcher")
            ]
        );
        assert_eq!(c.pid_file("p1"), Path::new("/etc/cm/var/run/celery@p1.pid"));
        assert_eq!(c.stop_grace, Duration::from_secs(30));
        assert_eq!(
            c.queue_for_task("cm.launch").map(|q| q.name.as_str()),
            Some("launcher")
        );
        assert!(c.servers.contains_key("india_openstack_essex"));
        assert_eq!(c.recipes.len(), 4);
        Ok(())
    }

    #[test]
    fn send_events_is_off_unless_set() -> Result<(), ConfigError> {
        assert!(!parse(MINIMAL)?.send_events);
        let on = format!("[worker]\nsend_events = true\n{MINIMAL}");
        assert!(parse(&on)?.send_events);
        let bad = format!("[worker]\nsend_events = 1\n{MINIMAL}");
        let msg = parse(&bad).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("send_events") || msg.contains("bool"), "{msg}");
        Ok(())
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace(
            "concurrency = 1\n[queues.launcher]",
            "concurency = 1\n[queues.launcher]",
        );
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("concurency"), "{msg}");
        assert!(msg.starts_with("/etc/cm/fabfile.toml:10:1:"), "{msg}");
    }

    #[test]
    fn malformed_toml_reports_line_and_column() {
        let msg = parse("[broker]\nurl = \"amqp://x\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/etc/cm/fabfile.toml:2:"), "{msg}");
    }

    #[test]
    fn duplicate_workers_across_queues_are_refused() {
        let text = MINIMAL.replace("workers = [\"l1\", \"l2\"]", "workers = [\"l1\", \"p2\"]");
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(
            msg.contains("\"p2\" is also in queues.provisioner"),
            "{msg}"
        );
    }

    #[test]
    fn empty_queue_list_and_bad_hostlist_are_refused() {
        let msg = parse("[broker]\n").map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("no queues configured"), "{msg}");
        let text = MINIMAL.replace("p[1-2]", "p[1-");
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("bad hostlist"), "{msg}");
    }

    /// Each number outside its range is refused at its place, by key and range; none panics.
    #[test]
    fn numbers_out_of_range_name_the_key_and_the_range() {
        for (from, to, expected) in [
            (
                "concurrency = 1\n[queues.launcher]",
                "concurrency = 0\n[queues.launcher]",
                "queues.provisioner.concurrency must be from 1 to 10000 (got 0)",
            ),
            (
                "[simulation]",
                "[worker]\nstop_grace_seconds = 1e99\n[simulation]",
                "worker.stop_grace_seconds must be from 0 to 86400 (got 1e99)",
            ),
            (
                "[simulation]",
                "[worker]\nstart_timeout_seconds = inf\n[simulation]",
                "worker.start_timeout_seconds must be from 0 to 86400 (got inf)",
            ),
            (
                "concurrency = 1\n[simulation]",
                "concurrency = 1\nprefetch = 70000\nretry_backoff_seconds = nan\n[simulation]",
                "queues.launcher.prefetch must be from 1 to 65535 (got 70000)",
            ),
            (
                "concurrency = 1\n[simulation]",
                "concurrency = 1\nretry_backoff_seconds = -0.5\n[simulation]",
                "queues.launcher.retry_backoff_seconds must be from 0 to 86400 (got -0.5)",
            ),
            (
                "concurrency = 1\n[simulation]",
                "concurrency = 1\nretries = -1\n[simulation]",
                "queues.launcher.retries must be from 0 to 10000 (got -1)",
            ),
            (
                "step_seconds = [0, 0]",
                "step_seconds = [0, 1e300]",
                "simulation.step_seconds must be [min, max] with 0 <= min <= max <= 86400",
            ),
            (
                "step_seconds = [0, 0]",
                "step_seconds = [0, 0]\nfailure_rate = 1.5",
                "simulation.failure_rate must be from 0 to 1 (got 1.5)",
            ),
            (
                "step_seconds = [0, 0]",
                "step_seconds = [0, 0]\n[store]\nbusy_timeout_ms = 99999999999",
                "store.busy_timeout_ms must be from 0 to 3600000",
            ),
            (
                "step_seconds = [0, 0]",
                "step_seconds = [0, 0]\n[web]\nmax_hosts = 0",
                "web.max_hosts must be from 1 to 1000000 (got 0)",
            ),
        ] {
            let text = MINIMAL.replacen(from, to, 1);
            assert_ne!(text, MINIMAL, "{from:?} not in the sample");
            let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(msg.contains(expected), "{msg}");
            assert!(msg.starts_with("/etc/cm/fabfile.toml:"), "no line: {msg}");
        }
        let text = MINIMAL.replace(
            "[simulation]",
            "[worker]\nstop_grace_seconds = 86400\n[simulation]",
        );
        assert_eq!(
            parse(&text).map(|c| c.stop_grace).ok(),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn invalid_broker_url_is_refused() {
        let text = MINIMAL.replace("amqp://guest:guest@127.0.0.1:5672/%2f", "http://nowhere");
        let msg = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("broker.url"), "{msg}");
        assert!(msg.starts_with("/etc/cm/fabfile.toml:3:"), "{msg}");
    }
}

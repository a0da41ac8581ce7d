//! A stack's fabfile.toml: `Options` say what differs from the default stack (broker, step
//! times, store, worker and queue keys, a queue of the test's own), `fabfile` writes it.

use super::broker::broker_url;

/// The workers of every stack: `p1 p2` consume its provisioner queue, `l1 l2` its launcher.
pub const WORKERS: [&str; 4] = ["p1", "p2", "l1", "l2"];

pub struct Options {
    pub broker: String,
    /// More `[broker]` keys, e.g. `ca_file = "ca.pem"`.
    pub broker_keys: String,
    pub step_seconds: (f64, f64),
    pub grace_seconds: f64,
    /// `[store] url`; the default is SQLite in the stack's temp dir.
    pub store_url: Option<String>,
    /// More `[store]` keys (with `store_url`), e.g. `password_file = "pw"`.
    pub store_keys: String,
    /// `[worker] allow_root`: tests run as root, so the default allows it.
    pub allow_root: bool,
    /// `[worker] node_host`: the host in the workers' node names (`l1@<host>`).
    pub node_host: Option<String>,
    /// More `[worker]` keys, e.g. `lease_seconds = 3`.
    pub worker_keys: String,
    /// More keys for both queues' tables, e.g. `queue_type = "quorum"`.
    pub queue_keys: String,
    /// More keys for the launcher queue's table alone, e.g. `retries = 2`.
    pub launch_keys: String,
    /// A third queue, of the test's own.
    pub own_queue: Option<OwnQueue>,
    /// More tables (`[web]`, `[recipes.X]`), appended.
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            broker: broker_url(),
            broker_keys: String::new(),
            step_seconds: (0.0, 0.0),
            grace_seconds: 30.0,
            store_url: None,
            store_keys: String::new(),
            allow_root: true,
            node_host: None,
            worker_keys: String::new(),
            queue_keys: String::new(),
            launch_keys: String::new(),
            own_queue: None,
            extra: String::new(),
        }
    }
}

/// A queue of the test's own (`Stack::queue`), e.g. for command tasks.
pub struct OwnQueue {
    pub workers: &'static [&'static str],
    /// More keys of its table, e.g. `concurrency = 2`.
    pub keys: String,
    /// The `[tasks."NAME"]` tables (TOML) of the tasks it takes, `{dir}` in them standing for
    /// the stack's `files()`. Without any, it takes cm's own tasks.
    pub tasks: String,
}

impl OwnQueue {
    /// Worker `c1`, two jobs at a time, taking the command tasks of `tasks`.
    pub fn commands(tasks: &str) -> Self {
        Self {
            workers: &["c1"],
            keys: "concurrency = 2".into(),
            tasks: tasks.into(),
        }
    }

    fn table(&self, name: &str, files: &str) -> String {
        let quoted = |names: &mut dyn Iterator<Item = &str>| {
            names
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tasks = quoted(
            &mut self
                .tasks
                .lines()
                .filter_map(|l| l.strip_prefix("[tasks.\"")?.split('"').next()),
        );
        let mut lines = vec![
            format!("[queues.{name}]"),
            format!("workers = [{}]", quoted(&mut self.workers.iter().copied())),
        ];
        if !tasks.is_empty() {
            lines.push(format!("tasks = [{tasks}]"));
        }
        lines.extend([self.keys.clone(), self.tasks.replace("{dir}", files)]);
        lines.retain(|l| !l.is_empty());
        lines.join("\n")
    }
}

impl Options {
    /// The config text: queues `prov` (workers p1 p2) and `launch` (l1 l2), and `own` if the
    /// options have one, its `{dir}` standing for `files`.
    pub fn fabfile(&self, prov: &str, launch: &str, own: Option<&str>, files: &str) -> String {
        let mut lines: Vec<String> = vec![
            "[broker]".into(),
            format!("url = \"{}\"", self.broker),
            self.broker_keys.clone(),
            "[paths]".into(),
            "pid_dir = \"run\"".into(),
            "log_dir = \"log\"".into(),
            "[worker]".into(),
            format!("stop_grace_seconds = {}", self.grace_seconds),
            "start_timeout_seconds = 20".into(),
        ];
        if self.allow_root {
            lines.push("allow_root = true".into());
        }
        if let Some(host) = &self.node_host {
            lines.push(format!("node_host = \"{host}\""));
        }
        lines.push(self.worker_keys.clone());
        for (queue, workers, task, more) in [
            (prov, "p[1-2]", "cm.provision", ""),
            (launch, "l[1-2]", "cm.launch", self.launch_keys.as_str()),
        ] {
            lines.extend([
                format!("[queues.{queue}]"),
                format!("workers = \"{workers}\""),
                format!("tasks = [\"{task}\"]"),
                "concurrency = 1".into(),
                self.queue_keys.clone(),
                more.into(),
            ]);
        }
        let (lo, hi) = self.step_seconds;
        lines.extend([
            "[simulation]".into(),
            format!("step_seconds = [{lo}, {hi}]"),
        ]);
        if let Some(url) = &self.store_url {
            lines.extend([
                "[store]".into(),
                format!("url = \"{url}\""),
                self.store_keys.clone(),
            ]);
        }
        if let (Some(q), Some(name)) = (&self.own_queue, own) {
            lines.push(q.table(name, files));
        }
        lines.push(self.extra.clone());
        lines.retain(|l| !l.is_empty());
        lines.join("\n") + "\n"
    }
}

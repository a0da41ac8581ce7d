//! A real environment in one line: a temp dir with its own fabfile.toml, queue names no other
//! test uses, and the real `cm` binary against the real broker. `web` starts the launcher (as a
//! process, or its router in-process), `browser` drives headless Chromium through WebDriver.
//!
//! The services the tests use come from the environment; unset or empty means the default:
//! - `CM_TEST_BROKER_URL`: RabbitMQ, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
//!   tests/mq.rs and tests/broker_restart.rs also run `rabbitmqctl`, so for them it must be
//!   this machine's broker.
//! - `CM_TEST_PG_URL`: a PostgreSQL database to connect to (as a user who may create databases);
//!   each test that needs one creates its own database beside it and drops it after. Default
//!   `postgres://postgres@127.0.0.1:5432/postgres`.
//! - `CM_SCREENSHOTS`: where the browser test saves its screenshots (default: its temp dir).
#![allow(dead_code)]

pub mod browser;
pub mod node;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const DEFAULT_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn parsed(key: &str, url: &str) -> url::Url {
    url::Url::parse(url).unwrap_or_else(|e| panic!("{key}={url:?} is not a URL: {e}"))
}

/// The broker every test uses: `$CM_TEST_BROKER_URL`.
pub fn broker_url() -> String {
    env_or("CM_TEST_BROKER_URL", DEFAULT_BROKER_URL)
}

fn broker() -> url::Url {
    parsed("CM_TEST_BROKER_URL", &broker_url())
}

/// The test broker's `host:port`.
pub fn broker_addr() -> String {
    let url = broker();
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5672)
    )
}

/// The test broker's URL with another user, password (as written in a URL) and vhost.
pub fn broker_url_as(user: &str, password: &str, vhost: &str) -> String {
    let mut url = broker();
    url.set_username(user).expect("a broker URL takes a user");
    url.set_password(Some(password))
        .expect("a broker URL takes a password");
    url.set_path(&format!("/{vhost}"));
    url.to_string()
}

/// The test broker's URL, credentials and vhost, but at `127.0.0.1:port` (a proxy to it).
pub fn broker_url_at(port: u16) -> String {
    let mut url = broker();
    url.set_host(Some("127.0.0.1"))
        .expect("a broker URL has a host");
    url.set_port(Some(port)).expect("a broker URL has a port");
    url.to_string()
}

/// The PostgreSQL database tests connect to first: `$CM_TEST_PG_URL`.
pub fn pg_url() -> String {
    env_or("CM_TEST_PG_URL", DEFAULT_PG_URL)
}

/// The URL of database `name` on the test PostgreSQL server.
pub fn pg_url_of(name: &str) -> String {
    let mut url = parsed("CM_TEST_PG_URL", &pg_url());
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The test PostgreSQL server without a database (bench/ appends `/<database>`).
pub fn pg_server_url() -> String {
    let mut url = parsed("CM_TEST_PG_URL", &pg_url());
    url.set_path("");
    url.set_query(None);
    url.to_string()
}

pub fn cm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cm")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prov: String,
    pub launch: String,
    /// More queues of the test's own (and their `.dead`), deleted with the stack's.
    also: std::sync::Mutex<Vec<String>>,
}

pub struct Options {
    pub broker: String,
    pub step_seconds: (f64, f64),
    pub grace_seconds: f64,
    /// `[store] url`; the default is SQLite in the stack's temp dir.
    pub store_url: Option<String>,
    /// The `[worker]` table's extra keys; tests run as root, so the default allows it.
    pub worker_extra: String,
    /// Extra keys for the `[queues.<launch>]` table, e.g. `retries = 2`.
    pub launch_queue_extra: String,
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            broker: broker_url(),
            step_seconds: (0.0, 0.0),
            grace_seconds: 30.0,
            store_url: None,
            worker_extra: "allow_root = true".into(),
            launch_queue_extra: String::new(),
            extra: String::new(),
        }
    }
}

impl Stack {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let prov = unique("t_prov");
        let launch = unique("t_launch");
        let config = dir.path().join("fabfile.toml");
        let text = format!(
            r#"[broker]
url = "{broker}"
[paths]
pid_dir = "run"
log_dir = "log"
[worker]
stop_grace_seconds = {grace}
start_timeout_seconds = 20
{worker_extra}
[queues.{prov}]
workers = "p[1-2]"
tasks = ["cm.provision"]
concurrency = 1
[queues.{launch}]
workers = "l[1-2]"
tasks = ["cm.launch"]
concurrency = 1
{launch_extra}
[simulation]
step_seconds = [{lo}, {hi}]
{store}
{extra}
"#,
            broker = opts.broker,
            grace = opts.grace_seconds,
            lo = opts.step_seconds.0,
            hi = opts.step_seconds.1,
            extra = opts.extra,
            launch_extra = opts.launch_queue_extra,
            worker_extra = opts.worker_extra,
            store = opts
                .store_url
                .map(|u| format!("[store]\nurl = \"{u}\"\n"))
                .unwrap_or_default(),
        );
        std::fs::write(&config, text).expect("write config");
        Self {
            dir,
            config,
            prov,
            launch,
            also: Default::default(),
        }
    }

    /// Deletes `queue` and its `.dead` when the stack is dropped, once its workers are gone.
    pub fn delete_on_drop(&self, queue: &str) {
        if let Ok(mut also) = self.also.lock() {
            also.push(queue.to_string());
        }
    }

    /// Runs `cm --config <ours> ARGS` to completion.
    pub fn cm(&self, args: &[&str]) -> Output {
        Command::new(cm_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("CM_BROKER_URL")
            .env_remove("CM_CONFIG")
            .output()
            .expect("run cm")
    }

    /// Runs cm and insists on success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cm(args);
        assert!(
            out.status.success(),
            "cm {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("run")
            .join(format!("celery@{name}.pid"))
    }

    /// The SQLite status store of a stack without a `[store] url` (cm's default place for it).
    pub fn store_file(&self) -> PathBuf {
        self.dir.path().join("var/cm.db")
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("log")
            .join(format!("celery@{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_file(name)).unwrap_or_default()
    }

    pub fn pid_of(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.pid_file(name)).expect("pid file");
        text.trim().parse().expect("pid in pid file")
    }

    /// Pids of every process running `cm ... worker` with our config, from /proc.
    pub fn worker_pids(&self) -> Vec<i32> {
        let needle = self.config.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            if argv.iter().any(|a| a == &needle) && argv.iter().any(|a| a == "worker") && alive(pid)
            {
                pids.push(pid);
            }
        }
        pids.sort();
        pids
    }

    /// Publishes with `cm ARGS` and returns the printed job ids.
    pub fn publish(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.cm(&["server", "clean"]);
        let also = self.also.lock().map(|a| a.clone()).unwrap_or_default();
        let names: Vec<String> = [&self.prov, &self.launch]
            .into_iter()
            .chain(also.iter())
            .flat_map(|q| [q.clone(), format!("{q}.dead")])
            .collect();
        delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Running (not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Whether someone holds an exclusive flock on `path`.
pub fn locked(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Polls `cond` until true; panics with `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn delete_queues(names: &[&str]) {
    runtime().block_on(async {
        let Ok(conn) =
            lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        for name in names {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .queue_delete(
                        (*name).into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await;
            }
        }
        let _ = conn.close(200, "test done".into()).await;
    });
}

/// How many messages wait in `queue` (declaring it, classic, if missing; a passive declare
/// first, so that a quorum queue is counted too).
pub fn queue_depth(queue: &str) -> u32 {
    runtime().block_on(async {
        let conn =
            lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect");
        let declare = |passive| {
            let conn = &conn;
            async move {
                // A failed passive declare closes its channel: each try gets its own.
                let ch = conn.create_channel().await.expect("channel");
                ch.queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        passive,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
            }
        };
        let q = match declare(true).await {
            Ok(q) => q,
            Err(_) => declare(false).await.expect("declare"),
        };
        let _ = conn.close(200, "".into()).await;
        q.message_count()
    })
}

/// A port on loopback that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A broker URL where nothing listens: the test broker's, at a free loopback port.
pub fn dead_broker_url() -> String {
    broker_url_at(closed_port())
}

/// Lines of all `logs` that say `job <id> ...: SUCCESS`, as (worker, id).
pub fn successes(stack: &Stack, workers: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for w in workers {
        for line in stack.log(w).lines() {
            if line.ends_with(": SUCCESS") {
                if let Some(id) = line
                    .split(" job ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    out.push((w.to_string(), id.to_string()));
                }
            }
        }
    }
    out
}

/// A PostgreSQL database of its own on the local server, dropped when this goes.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn new() -> Self {
        let name = unique("cm_test").to_lowercase();
        runtime().block_on(async {
            let admin = pg_url();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} (make test starts it; CM_TEST_PG_URL): {e}")
                });
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
        });
        let url = pg_url_of(&name);
        Self { name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        runtime().block_on(async move {
            if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url()).await
            {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}

/// `cm jobs --json --limit 0`, parsed.
pub fn jobs(stack: &Stack) -> Vec<serde_json::Value> {
    let out = stack.ok(&["jobs", "--json", "--limit", "0"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("jobs json")
}

/// A TCP proxy to the broker that a test can cut: every open connection is shut at once, and new
/// ones can be refused for a while, without touching the shared RabbitMQ.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    conns: Vec<std::net::TcpStream>,
    accepting: bool,
}

impl Proxy {
    pub fn to_broker() -> Self {
        Self::between("127.0.0.1", broker_addr())
    }

    /// A proxy listening on a free port at `listen` (an address of this machine, e.g. the
    /// root end of a veth pair) to `upstream_addr` (`host:port`).
    pub fn between(listen: &str, upstream_addr: String) -> Self {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind((listen, 0)).expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            conns: Vec::new(),
            accepting: true,
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let accepting = shared.lock().map(|s| s.accepting).unwrap_or(false);
                if !accepting {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&upstream_addr) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    upstream.try_clone(),
                    client.try_clone(),
                    upstream.try_clone(),
                ) {
                    if let Ok(mut s) = shared.lock() {
                        s.conns.push(c3);
                        s.conns.push(u3);
                    }
                    pipe(client, u2);
                    pipe(upstream, c2);
                }
            }
        });
        Self { port, state }
    }

    pub fn url(&self) -> String {
        broker_url_at(self.port)
    }

    /// Shuts every connection through the proxy, as a network cut or broker crash would.
    pub fn cut(&self) {
        if let Ok(mut s) = self.state.lock() {
            for c in s.conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn set_accepting(&self, accepting: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.accepting = accepting;
        }
    }
}

impl Stack {
    /// The same queues as another "host" on this machine: its own folder (pid and log dirs),
    /// the config text with `from` replaced by `to` (e.g. the node_host).
    pub fn second_host(&self, from: &str, to: &str) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("fabfile.toml");
        let text = std::fs::read_to_string(&self.config)
            .expect("config")
            .replace(from, to);
        std::fs::write(&config, text).expect("write config");
        Stack {
            dir,
            config,
            prov: self.prov.clone(),
            launch: self.launch.clone(),
            also: Default::default(),
        }
    }
}

/// Publishes one message straight to `queue` on the broker, as any AMQP client could.
pub fn publish_to(queue: &str, body: &[u8], props: lapin::BasicProperties) {
    runtime().block_on(async {
        let conn =
            lapin::Connection::connect(&broker_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_publish("".into(), queue.into(), Default::default(), body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let _ = conn.close(200, "".into()).await;
    });
}

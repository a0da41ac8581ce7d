//! A real environment in one line, and the words to drive it: `Stack::new()` makes a temp dir
//! with its own fabfile.toml and queue names no other test uses; `stack.start(..)`,
//! `stack.launch().hosts("vm[1-5]").wait().ids()`, `stack.job(id)` run the real `cm` binary
//! against the real broker and store, so each test reads as the scenario it checks.
//!
//! - `stack`: the `Stack`: `cm` runs, pid and log files, jobs; `config`: its `Options`, the
//!   fabfile.toml they make.
//! - `publish`: `cm launch | provision | call` as a builder (`Stack::launch` and friends).
//! - `broker`: the test broker's URLs; queue depths and deletes, raw publishes, rabbitmqctl.
//! - `pg`: PostgreSQL databases of a test's own.
//! - `proxy`: a TCP proxy to the broker that cuts links.
//! - `procs`: processes: alive, pid files locked, /proc scans, signals, children killed on drop.
//! - `waits`: `eventually` and friends.
//! - `celery`: the Celery venv (bench/.venv): its tools and Python clients.
//! - `tls`: a CA of a test's own and the certificates it signs; a PostgreSQL server of a
//!   test's own, with TLS or without.
//! - `node`: a RabbitMQ node of a test's own; `web`: the web launcher, as a process or
//!   in-process; `browser`: headless Chromium through WebDriver.
//!
//! The services the tests use come from the environment; unset or empty means the default:
//! - `CM_TEST_BROKER_URL`: RabbitMQ, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
//!   tests/mq.rs and tests/broker_restart.rs also run `rabbitmqctl`, so for them it must be
//!   this machine's broker.
//! - `CM_TEST_PG_URL`: a PostgreSQL database to connect to (as a user who may create databases);
//!   each test that needs one creates its own database beside it and drops it after. Default
//!   `postgres://postgres@127.0.0.1:5432/postgres`.
//! - `CM_SCREENSHOTS`: where the browser test saves its screenshots (default: its temp dir).
// Each test file uses a part of these helpers, and of the names re-exported below.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod browser;
pub mod celery;
pub mod config;
pub mod node;
pub mod pg;
pub mod procs;
pub mod proxy;
pub mod publish;
pub mod stack;
pub mod tls;
pub mod waits;
pub mod web;

pub use broker::*;
pub use config::*;
pub use pg::*;
pub use procs::*;
pub use proxy::Proxy;
pub use stack::*;
pub use waits::*;

use std::sync::atomic::{AtomicU32, Ordering};

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

/// A port on loopback that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn parsed(key: &str, url: &str) -> url::Url {
    url::Url::parse(url).unwrap_or_else(|e| panic!("{key}={url:?} is not a URL: {e}"))
}

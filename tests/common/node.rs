//! A RabbitMQ node of a test's own (scripts/rabbitmq-node.sh), beside the machine's broker,
//! stopped and its data removed when dropped.

use std::path::PathBuf;
use std::process::Command;

pub struct Node {
    pub name: String,
    /// Its URL at the first address it listens on.
    pub url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-node.sh")
}

impl Node {
    /// Listens on 127.0.0.1:`port`, with the rabbitmq.conf lines `conf`.
    pub fn start(name: &str, port: u16, conf: &[&str]) -> Self {
        Self::start_on(name, port, &["127.0.0.1"], conf)
    }

    /// Listens on 127.0.0.1:`port` with TLS only (`amqps://`); `conf` gives its
    /// `ssl_options.*`.
    pub fn start_tls(name: &str, port: u16, conf: &[&str]) -> Self {
        Self::launch(name, port, &["127.0.0.1"], true, conf)
    }

    /// Listens on `port` at each of `listen` (addresses of this machine).
    pub fn start_on(name: &str, port: u16, listen: &[&str], conf: &[&str]) -> Self {
        Self::launch(name, port, listen, false, conf)
    }

    fn launch(name: &str, port: u16, listen: &[&str], tls: bool, conf: &[&str]) -> Self {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(["start", name, &port.to_string()]);
        for addr in listen {
            cmd.args(["--listen", addr]);
        }
        if tls {
            cmd.arg("--tls");
        }
        let out = cmd
            .args(conf)
            .output()
            .expect("bash scripts/rabbitmq-node.sh");
        assert!(
            out.status.success(),
            "starting RabbitMQ node {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            name: name.to_string(),
            url: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }
}

impl Node {
    /// `rabbitmqctl ARGS` against this node; panics if it fails.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "-n", &format!("{}@localhost", self.name)])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &self.name])
            .output();
    }
}

/// A port for a node's AMQP listener, free at each of `addrs`, whose distribution port (it +
/// 20000, as scripts/rabbitmq-node.sh sets it) is free too, so that runs side by side never
/// collide.
pub fn free_port_pair(addrs: &[&str]) -> u16 {
    let free = |p: u16| {
        addrs
            .iter()
            .all(|a| std::net::TcpListener::bind((*a, p)).is_ok())
            && std::net::TcpListener::bind(("127.0.0.1", p + 20_000)).is_ok()
    };
    let start = 20_000 + (std::process::id() % 20_000) as u16;
    (start..45_000)
        .chain(20_000..start)
        .find(|&p| free(p))
        .expect("a free pair of ports")
}

//! What a process cm starts detached is: a worker by name, or the web server. A role has its pid
//! file and log, the command line it is started with, and that same command line read back out
//! of /proc, which is how cm knows a pid is its own before signalling it.

use std::path::PathBuf;

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `cm --config PATH worker NAME --detached`
    Worker(String),
    /// `cm --config PATH web --detached [--bind ADDR]`
    Web,
}

impl Role {
    pub fn worker(name: &str) -> Self {
        Self::Worker(name.to_string())
    }

    /// `celery@<name>.pid`, `cm-web.pid`: flock-held by the process for its whole life.
    pub fn pid_file(&self, cfg: &Config) -> PathBuf {
        match self {
            Self::Worker(name) => cfg.pid_file(name),
            Self::Web => cfg.pid_dir.join("cm-web.pid"),
        }
    }

    /// Its stderr (and stdout, once detached).
    pub fn log_file(&self, cfg: &Config) -> PathBuf {
        match self {
            Self::Worker(name) => cfg.log_file(name),
            Self::Web => cfg.log_dir.join("cm-web.log"),
        }
    }

    /// Its name on report lines: the worker's name, or `web`.
    pub fn label(&self) -> &str {
        match self {
            Self::Worker(name) => name,
            Self::Web => "web",
        }
    }

    /// What errors call it: `worker p1`, `the web server`.
    pub fn noun(&self) -> String {
        match self {
            Self::Worker(name) => format!("worker {name}"),
            Self::Web => "the web server".into(),
        }
    }

    /// What it is to a config: `worker p1`, `web server` ("this config's web server").
    pub fn of_config(&self) -> String {
        match self {
            Self::Worker(name) => format!("worker {name}"),
            Self::Web => "web server".into(),
        }
    }

    /// The arguments after `cm --config PATH` that run it detached.
    pub(crate) fn detached_args(&self) -> Vec<&str> {
        match self {
            Self::Worker(name) => vec!["worker", name, "--detached"],
            Self::Web => vec!["web", "--detached"],
        }
    }

    /// The role an argv of this binary runs, and the config it names; `None` for anything else,
    /// a foreground `cm web` in someone's terminal included (not ours to stop).
    pub(crate) fn in_argv(argv: &[String]) -> Option<(Self, PathBuf)> {
        detached_web_argv(argv)
            .map(|config| (Self::Web, config))
            .or_else(|| worker_argv(argv).map(|(name, config)| (Self::Worker(name), config)))
    }
}

/// Reads `cm [--config PATH] worker NAME ...` back out of an argv; detached or not, since
/// systemd runs workers in the foreground.
fn worker_argv(argv: &[String]) -> Option<(String, PathBuf)> {
    let pos = argv.iter().position(|a| a == "worker")?;
    let name = argv.get(pos + 1)?.clone();
    let config = argv
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| argv.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix("--config=").map(PathBuf::from))
        })?;
    Some((name, config))
}

/// Reads `cm --config PATH web --detached ...` (what `cm web --detach` and `cm server start`
/// start) back out of an argv.
fn detached_web_argv(argv: &[String]) -> Option<PathBuf> {
    let mut rest = argv.iter().skip(1);
    let mut config = None;
    let mut command = None;
    while let Some(a) = rest.next() {
        if a == "--config" {
            config = rest.next().map(PathBuf::from);
        } else if let Some(c) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(c));
        } else if !a.starts_with('-') {
            command = Some(a);
            break;
        }
    }
    (command? == "web" && rest.any(|a| a == "--detached")).then_some(config?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_worker_argv_is_read_back() {
        let full = argv(&[
            "/x/cm",
            "--config",
            "/etc/cm/f.toml",
            "worker",
            "p1",
            "--detached",
        ]);
        let want = Some((Role::worker("p1"), PathBuf::from("/etc/cm/f.toml")));
        assert_eq!(Role::in_argv(&full), want);
        assert_eq!(Role::in_argv(&full[..3]), None);
        assert_eq!(
            Role::in_argv(&full[..5]),
            want,
            "foreground workers are ours too"
        );
    }

    #[test]
    fn a_detached_web_argv_is_read_back_and_a_foreground_one_is_not() {
        let web = |v: &[&str]| Role::in_argv(&argv(v));
        assert_eq!(
            web(&[
                "/x/cm",
                "--config",
                "/etc/cm/f.toml",
                "web",
                "--detached",
                "--bind",
                "127.0.0.1:0"
            ]),
            Some((Role::Web, PathBuf::from("/etc/cm/f.toml")))
        );
        assert_eq!(
            web(&["/x/cm", "--config=/a.toml", "web", "--detached"]),
            Some((Role::Web, PathBuf::from("/a.toml")))
        );
        assert_eq!(web(&["/x/cm", "--config", "/a.toml", "web"]), None);
        assert_eq!(
            web(&[
                "/x/cm",
                "--config",
                "/a.toml",
                "worker",
                "web",
                "--detached"
            ]),
            Some((Role::worker("web"), PathBuf::from("/a.toml"))),
            "a worker named web is a worker"
        );
    }

    #[test]
    fn what_a_role_starts_with_is_what_it_is_read_back_as() {
        for role in [Role::worker("p1"), Role::Web] {
            let mut full = argv(&["/x/cm", "--config", "/a.toml"]);
            full.extend(role.detached_args().iter().map(|s| s.to_string()));
            assert_eq!(
                Role::in_argv(&full),
                Some((role.clone(), PathBuf::from("/a.toml")))
            );
        }
    }
}

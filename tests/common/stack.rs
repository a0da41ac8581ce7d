//! The `Stack`: a temp dir with its own fabfile.toml (`Options`), whose queues have names no
//! other test uses, and the real `cm` run against it; its workers' pid and log files; its jobs
//! as the store has them. Dropped, it cleans its workers away and deletes its queues.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;

use serde_json::Value;

use super::broker::delete_queues;
use super::config::Options;
use super::procs::{pids_running, read_pid, signal, Signal};
use super::{cm_bin, unique};

/// A `cm` run left going, its output read meanwhile (it never blocks on a full pipe).
pub struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    /// Waits for it to end: what it gave.
    pub fn finish(mut self) -> Ran {
        let status = self.child.wait().expect("wait for cm");
        let text = |h: JoinHandle<String>| h.join().unwrap_or_default();
        Ran {
            code: status.code(),
            stdout: text(self.stdout),
            stderr: text(self.stderr),
        }
    }
}

/// All that `from` gives, read on a thread of its own.
fn read_all(from: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut from) = from {
            let _ = from.read_to_string(&mut text);
        }
        text
    })
}

/// What a `cm` run gave: its exit code and its output as text.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Its stdout, after insisting that `cm what` succeeded.
    pub fn stdout_ok(self, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "cm {what} failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Its stderr, after insisting that `cm what` exited with `code`.
    pub fn stderr_of(self, code: i32, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "cm {what}:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self.stderr
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prov: String,
    pub launch: String,
    own: Option<String>,
    /// More queues of the test's own (and their `.dead`), deleted with the stack's.
    also: Mutex<Vec<String>>,
}

impl Stack {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = dir.path().join("files");
        std::fs::create_dir(&files).expect("the stack's files dir");
        let prov = unique("t_prov");
        let launch = unique("t_launch");
        let own = opts.own_queue.as_ref().map(|_| unique("t_own"));
        let text = opts.fabfile(&prov, &launch, own.as_deref(), &files.display().to_string());
        let config = dir.path().join("fabfile.toml");
        std::fs::write(&config, text).expect("write config");
        Self {
            dir,
            config,
            prov,
            launch,
            own,
            also: Default::default(),
        }
    }

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
            own: self.own.clone(),
            also: Default::default(),
        }
    }

    /// Rewrites the config: `edit` gets its text and gives the new one.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(&self.config, edit(text)).expect("write config");
    }

    /// The name of the stack's own queue (`Options::own_queue`).
    pub fn queue(&self) -> &str {
        self.own
            .as_deref()
            .expect("a stack made with Options::own_queue")
    }

    /// The folder that `{dir}` stands for in the own queue's tasks.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// `name` in [`Stack::files`].
    pub fn file(&self, name: &str) -> PathBuf {
        self.files().join(name)
    }

    /// Deletes `queue` and its `.dead` when the stack is dropped, once its workers are gone.
    pub fn delete_on_drop(&self, queue: &str) {
        if let Ok(mut also) = self.also.lock() {
            also.push(queue.to_string());
        }
    }

    /// Runs `cm --config <ours> ARGS` to completion.
    pub fn cm(&self, args: &[&str]) -> Ran {
        self.cm_via(&[], args)
    }

    /// Runs `WRAPPER... cm --config <ours> ARGS` to completion (e.g. `runuser -u NAME --`).
    pub fn cm_via(&self, wrapper: &[&str], args: &[&str]) -> Ran {
        let mut cmd = self.command(wrapper, args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {wrapper:?} cm {args:?}: {e}"));
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `cm ARGS` started and left running, its output piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(&[], args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn cm {args:?}: {e}"))
    }

    /// `cm ARGS` started and left running; `finish` waits for it.
    pub fn background(&self, args: &[&str]) -> Running {
        let mut child = self.spawn(args);
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(cm_bin());
                cmd
            }
            None => Command::new(cm_bin()),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("CM_BROKER_URL")
            .env_remove("CM_CONFIG");
        cmd
    }

    /// Runs cm and insists on success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.cm(args).stdout_ok(&format!("{args:?}"))
    }

    /// Runs cm and insists on exit code `code`, returning stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        self.cm(args).stderr_of(code, &format!("{args:?}"))
    }

    /// `cm queue start [WORKERS]` (all without any): its report.
    pub fn start(&self, workers: &[&str]) -> String {
        self.ok(&[&["queue", "start"], workers].concat())
    }

    /// `cm queue stop [WORKERS]` (all without any): its report.
    pub fn stop(&self, workers: &[&str]) -> String {
        self.ok(&[&["queue", "stop"], workers].concat())
    }

    /// `cm server stop`: every worker and the web server.
    pub fn server_stop(&self) -> String {
        self.ok(&["server", "stop"])
    }

    /// `cm queue status [WORKERS] --json`, parsed.
    pub fn status(&self, workers: &[&str]) -> Value {
        let out = self.ok(&[&["queue", "status"], workers, &["--json"]].concat());
        serde_json::from_str(&out).expect("queue status JSON")
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("run")
            .join(format!("celery@{name}.pid"))
    }

    pub fn web_pid_file(&self) -> PathBuf {
        self.dir.path().join("run/cm-web.pid")
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

    /// The logs of `workers`, one after the other.
    pub fn logs(&self, workers: &[&str]) -> String {
        workers.iter().map(|w| self.log(w)).collect()
    }

    pub fn pid_of(&self, name: &str) -> i32 {
        read_pid(&self.pid_file(name))
    }

    /// kill -9 of worker `name`, as a crash would end it.
    pub fn kill9(&self, name: &str) {
        signal(self.pid_of(name), Signal::SIGKILL);
    }

    /// Pids of every process running `cm ... worker` with our config, from /proc.
    pub fn worker_pids(&self) -> Vec<i32> {
        pids_running(&[&self.config.to_string_lossy(), "worker"])
    }

    /// Lines of the logs of `workers` that say `job <id> ...: SUCCESS`, as (worker, id).
    pub fn successes(&self, workers: &[&str]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for w in workers {
            for line in self.log(w).lines() {
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

    /// `cm jobs --json --limit 0`, parsed.
    pub fn jobs(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["jobs", "--json", "--limit", "0"])).expect("jobs JSON")
    }

    /// Job `id` as `cm jobs` lists it; null while the store has no such job.
    pub fn job(&self, id: &str) -> Value {
        self.jobs()
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or(Value::Null)
    }

    /// `cm jobs show ID --json`: the job with its history; null while cm knows no such job.
    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.cm(&["jobs", "show", id, "--json"]).stdout)
            .unwrap_or(Value::Null)
    }

    /// The states job `id` went through, oldest first.
    pub fn history(&self, id: &str) -> Vec<String> {
        self.show(id)["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["state"].as_str().map(String::from))
            .collect()
    }

    /// Whether the store holds `n` jobs, every one SUCCESS.
    pub fn all_succeeded(&self, n: usize) -> bool {
        let all = self.jobs();
        all.len() == n && all.iter().all(|j| j["state"] == "SUCCESS")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.cm(&["server", "clean"]);
        let also = self.also.lock().map(|a| a.clone()).unwrap_or_default();
        let names: Vec<String> = [&self.prov, &self.launch]
            .into_iter()
            .chain(self.own.iter())
            .chain(also.iter())
            .flat_map(|q| [q.clone(), format!("{q}.dead")])
            .collect();
        delete_queues(&names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

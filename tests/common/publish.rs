//! `cm launch`, `cm provision` and `cm call` as sentences:
//! `stack.launch().hosts("vm[1-5]").wait().ids()` publishes the Hadoop recipe on
//! india_openstack_essex, one job per host, waits for them, and gives their ids.

use super::stack::{Ran, Running, Stack};

/// One publishing `cm` command, its options set one by one, run by one of the last words:
/// `ids`, `id`, `stdout`, `fails`, `run` or `background`.
#[must_use = "a publish runs only by ids(), id(), stdout(), fails(), run() or background()"]
pub struct Publish<'a> {
    stack: &'a Stack,
    via: Vec<String>,
    command: Vec<String>,
    /// `--flag value` or a lone `--flag`, in the order first set.
    options: Vec<(String, Option<String>)>,
}

impl Stack {
    /// `cm launch --server india_openstack_essex --recipe Hadoop`: one job, on host `i1`
    /// unless `hosts` says otherwise.
    pub fn launch(&self) -> Publish<'_> {
        Publish::new(self, &["launch"])
            .server("india_openstack_essex")
            .recipe("Hadoop")
    }

    /// `cm provision --hosts HOSTS --image ubuntu`.
    pub fn provision(&self, hosts: &str) -> Publish<'_> {
        Publish::new(self, &["provision"])
            .hosts(hosts)
            .image("ubuntu")
    }

    /// `cm call TASK`, arguments none unless `args` or `kwargs` give them.
    pub fn call(&self, task: &str) -> Publish<'_> {
        Publish::new(self, &["call", task])
    }
}

impl<'a> Publish<'a> {
    fn new(stack: &'a Stack, command: &[&str]) -> Self {
        Self {
            stack,
            via: Vec::new(),
            command: command.iter().map(|s| s.to_string()).collect(),
            options: Vec::new(),
        }
    }

    /// `--flag value`, replacing an earlier value of the flag.
    pub fn set(mut self, flag: &str, value: impl ToString) -> Self {
        let value = Some(value.to_string());
        match self.options.iter_mut().find(|(f, _)| f == flag) {
            Some(option) => option.1 = value,
            None => self.options.push((flag.to_string(), value)),
        }
        self
    }

    /// A lone `--flag`.
    pub fn flag(mut self, flag: &str) -> Self {
        if !self.options.iter().any(|(f, _)| f == flag) {
            self.options.push((flag.to_string(), None));
        }
        self
    }

    pub fn server(self, server: &str) -> Self {
        self.set("--server", server)
    }

    pub fn recipe(self, recipe: &str) -> Self {
        self.set("--recipe", recipe)
    }

    pub fn kind(self, kind: &str) -> Self {
        self.set("--kind", kind)
    }

    /// A hostlist (`vm[1-5]`): one job per host.
    pub fn hosts(self, hosts: &str) -> Self {
        self.set("--hosts", hosts)
    }

    pub fn image(self, image: &str) -> Self {
        self.set("--image", image)
    }

    /// The whole batch `n` times over.
    pub fn count(self, n: u32) -> Self {
        self.set("--count", n)
    }

    pub fn queue(self, queue: &str) -> Self {
        self.set("--queue", queue)
    }

    /// `cm call`'s positional arguments, a JSON list.
    pub fn args(self, json: &str) -> Self {
        self.set("--args", json)
    }

    /// `cm call`'s keyword arguments, a JSON object.
    pub fn kwargs(self, json: &str) -> Self {
        self.set("--kwargs", json)
    }

    /// Waits until every job is final (and says how they ended).
    pub fn wait(self) -> Self {
        self.flag("--wait")
    }

    /// How long `--wait` waits, in seconds.
    pub fn timeout(self, seconds: f64) -> Self {
        self.wait().set("--timeout", seconds)
    }

    pub fn quiet(self) -> Self {
        self.flag("--quiet")
    }

    /// Run through `wrapper` (e.g. `ip netns exec NS`).
    pub fn via(mut self, wrapper: &[&str]) -> Self {
        self.via = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    fn argv(&self) -> Vec<String> {
        let mut argv = self.command.clone();
        for (flag, value) in &self.options {
            argv.push(flag.clone());
            argv.extend(value.clone());
        }
        argv
    }

    /// Runs it to completion, whatever comes of it.
    pub fn run(self) -> Ran {
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let via: Vec<&str> = self.via.iter().map(String::as_str).collect();
        self.stack.cm_via(&via, &argv)
    }

    /// Runs it, insisting on success: its stdout.
    pub fn stdout(self) -> String {
        let what = format!("{:?}", self.argv());
        self.run().stdout_ok(&what)
    }

    /// Runs it, insisting on success: the printed lines, one job id each (and with `--wait` of
    /// `cm call`, the result after the id).
    pub fn ids(self) -> Vec<String> {
        self.stdout().lines().map(str::to_string).collect()
    }

    /// Runs it, insisting on success: the one job's id.
    pub fn id(self) -> String {
        self.ids().into_iter().next().expect("a job id")
    }

    /// Runs it, insisting that it exits with `code`: its stderr.
    pub fn fails(self, code: i32) -> String {
        let what = format!("{:?}", self.argv());
        self.run().stderr_of(code, &what)
    }

    /// Starts it and leaves it running; `finish` waits for it.
    pub fn background(self) -> Running {
        let argv = self.argv();
        assert!(self.via.is_empty(), "a background publish runs cm itself");
        self.stack
            .background(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

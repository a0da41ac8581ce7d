//! What the publishing commands take (`cm launch`, `cm provision`, `cm call`): their jobs'
//! values, `--after` parents and `--wait`.

use clap::{Args, ValueEnum};

/// What `--after` adds to a publishing command: the jobs its jobs wait for.
#[derive(Debug, Args, Default)]
pub struct AfterArgs {
    /// Run only once these jobs ended SUCCESS; a FAILURE or REVOKED one revokes these jobs
    /// (ids as `cm provision` prints them: several after one flag, or in one argument
    /// separated by spaces or newlines, so `--after $ids` works)
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub after: Vec<String>,
    /// Run once these jobs ended, whatever their end
    #[arg(long = "after-any", value_name = "ID", num_args = 1..)]
    pub after_any: Vec<String>,
}

impl AfterArgs {
    /// The parents named, each argument split at whitespace.
    pub fn parents(&self) -> crate::store::Parents {
        let split = |args: &[String]| -> Vec<String> {
            args.iter()
                .flat_map(|a| a.split_whitespace())
                .map(str::to_string)
                .collect()
        };
        crate::store::Parents {
            after: split(&self.after),
            after_any: split(&self.after_any),
        }
    }
}

/// What `--wait` adds to a publishing command.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until every published job is final; exit 0 only if all succeeded
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 75)
    #[arg(long, default_value_t = 600.0, requires = "wait", value_parser = wait_seconds)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MachineKind {
    Vm,
    Baremetal,
}

impl MachineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MachineKind::Vm => "vm",
            MachineKind::Baremetal => "baremetal",
        }
    }
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Server from fabfile.toml [servers], e.g. india_openstack_essex
    #[arg(long)]
    pub server: String,
    /// Recipe from fabfile.toml [recipes], e.g. "Slurm Cluster"
    #[arg(long)]
    pub recipe: String,
    /// Machine kind the recipe is launched on
    #[arg(long, value_enum, default_value = "vm")]
    pub kind: MachineKind,
    /// Hostlist: one job per host, e.g. 'i[1-3]'
    #[arg(long, default_value = "i1")]
    pub hosts: String,
    /// Publish the whole set this many times (smoke tests, benchmarks)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Who the launch is for (recorded with the job)
    #[arg(long)]
    pub user: Option<String>,
    /// Priority 0-9 (Celery's `priority`): jobs held by the store are released highest first
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    #[command(flatten)]
    pub after: AfterArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Task name: cm.launch, cm.provision, or a [tasks."NAME"] of fabfile.toml
    pub task: String,
    /// Positional arguments, a JSON list, e.g. '["db1", "full"]'
    #[arg(long, value_name = "JSON", default_value = "[]")]
    pub args: String,
    /// Keyword arguments, a JSON object, e.g. '{"host": "db1"}'
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub kwargs: String,
    /// Publish to this configured queue instead of the first one listing the task
    #[arg(long)]
    pub queue: Option<String>,
    /// The job's id (with --after or --after-any only: the store refuses an id it has)
    #[arg(
        long,
        value_name = "ID",
        requires = "AfterArgs",
        conflicts_with = "count"
    )]
    pub id: Option<String>,
    /// Publish this many jobs of it (each its own id); the result is printed for one job only
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Priority 0-9 (Celery's `priority`): jobs held by the store are released highest first
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    #[command(flatten)]
    pub after: AfterArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Hostlist: one job per host, e.g. 'i[1-3]'
    #[arg(long)]
    pub hosts: String,
    /// Image to provision the hosts with
    #[arg(long)]
    pub image: String,
    /// Publish the whole set this many times
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Priority 0-9 (Celery's `priority`): jobs held by the store are released highest first
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    #[command(flatten)]
    pub after: AfterArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `--timeout`: seconds from 0 to a week (a number beyond what a deadline can hold is refused
/// here, not a panic later).
fn wait_seconds(text: &str) -> Result<f64, String> {
    const MAX: f64 = 604_800.0;
    match text.parse::<f64>() {
        Ok(s) if (0.0..=MAX).contains(&s) => Ok(s),
        Ok(_) => Err(format!("{text} is not from 0 to {MAX} seconds")),
        Err(e) => Err(format!("{text:?} is not a number of seconds: {e}")),
    }
}

//! The command line: clap derive types only; each command's work lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod publish;
mod tasks;
pub use publish::{AfterArgs, CallArgs, LaunchArgs, MachineKind, ProvisionArgs, WaitArgs};
pub use tasks::TasksCmd;

/// cm: start, stop and watch the job-queue workers, and hand them jobs.
#[derive(Debug, Parser)]
#[command(name = "cm", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: $CM_CONFIG, then ./fabfile.toml, then /etc/cm/fabfile.toml]
    #[arg(long, global = true, env = "CM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// For scripts: only data (job ids, JSON, asked-for tables) and errors; no reports or progress
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Also log what the libraries say (lapin, sqlx, hyper) at warn; -vv: info, -vvv: debug
    /// [default: only cm's own warnings; RUST_LOG wins]
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The workers: start, stop, restart, status, clean
    #[command(subcommand)]
    Queue(QueueCmd),
    /// The whole stack at once (what `fab server.*` did)
    #[command(subcommand)]
    Server(ServerCmd),
    /// Run one worker in the foreground (what `queue start` runs detached; for systemd too)
    Worker {
        /// Worker name from fabfile.toml, e.g. p1
        name: String,
        /// Started by `cm queue start`: stdout is its readiness pipe, stderr its log
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Publish launch jobs (one per host): a recipe on a server
    Launch(LaunchArgs),
    /// Publish provisioning jobs (one per host)
    Provision(ProvisionArgs),
    /// Jobs in the status store (the CLI twin of /cm/launch/db_stats)
    Jobs(JobsArgs),
    /// Schedules of fabfile.toml [schedules]: each with its last firing and next slot; pause,
    /// resume, run one now, its history
    Schedules(SchedulesArgs),
    /// What operators set on a task for every worker: `tasks rate TASK 10/m|off|config`
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// The status store itself
    #[command(subcommand)]
    Db(DbCmd),
    /// Messages no worker could run, in each queue's `<queue>.dead`
    #[command(subcommand)]
    Dead(DeadCmd),
    /// The web launcher: /cm/launch, /cm/launch/db_stats, /cm/db_reset and /api/
    Web(WebArgs),
    /// The local RabbitMQ: start, stop, status (queue depths), setup (vhost and user from the URL)
    #[command(subcommand)]
    Mq(MqCmd),
    /// Publish any configured task with JSON arguments, like `celery call`; prints the job's id
    Call(CallArgs),
    /// Print a worker's log, one job's lines from every worker, or a queue's logs merged; -f follows
    Logs(LogsArgs),
    /// Print a shell completion script, e.g. `cm completions bash > /etc/bash_completion.d/cm`
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `cm man | man -l -`
    Man {
        /// Write cm.1 and one page per subcommand (cm-queue.1, ...) into this folder instead
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MqCmd {
    /// Start the local RabbitMQ if it is down (as root); waits until it accepts connections
    Start,
    /// Stop the local RabbitMQ (as root): every worker loses its broker
    Stop,
    /// Whether the broker answers, and per cm queue (and its .dead) messages ready, unacked, consumers
    Status {
        /// Print a JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Create the vhost and user of [broker] url with full permissions on it (as root; idempotent)
    Setup,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["name", "job", "queue"]))]
pub struct LogsArgs {
    /// Worker name from fabfile.toml, e.g. l1
    pub name: Option<String>,
    /// Only this job's lines, from every worker of this config that ran it (redeliveries too)
    #[arg(long, value_name = "ID", conflicts_with = "follow")]
    pub job: Option<String>,
    /// Every worker of this queue, merged in time order
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Keep printing what is appended, across rotation and truncation (Ctrl-C ends)
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines to print first
    #[arg(short = 'n', long, default_value_t = 50, value_name = "LINES",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=10_000_000))]
    pub lines: usize,
}

#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address to listen on [default: [web] bind, else 127.0.0.1:8080]; port 0 picks a free one
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Run in the background (pid file cm-web.pid, log cm-web.log); returns once it listens
    #[arg(long)]
    pub detach: bool,
    /// Started by `cm web --detach`: stdout is its readiness pipe, stderr its log
    #[arg(long, hide = true)]
    pub detached: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub show: Option<JobsCmd>,
    /// Only jobs in this state, in any case (WAITING, PENDING, SCHEDULED, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, a step, ...)
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs launched on this server of fabfile.toml [servers]
    #[arg(long)]
    pub server: Option<String>,
    /// Only jobs of this recipe of fabfile.toml [recipes]
    #[arg(long)]
    pub recipe: Option<String>,
    /// How many, newest first (0: all)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub limit: i64,
    /// Print a JSON array of job objects
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub cmd: Option<SchedulesCmd>,
    /// Print a JSON array, one object per schedule
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// Stop firing it, on every host and across restarts, until `resume`
    Pause {
        /// A schedule of fabfile.toml [schedules]
        name: String,
    },
    /// Fire it again from its next slot (the slots passed while paused never fire)
    Resume {
        /// A schedule of fabfile.toml [schedules]
        name: String,
    },
    /// Fire it now, outside its slots: a running worker publishes the job within a second
    Run {
        /// A schedule of fabfile.toml [schedules]
        name: String,
    },
    /// Its firings, newest first: slot, why, job and the job's state
    History {
        /// A schedule, in the config or only in the store
        name: String,
        /// How many (0: all)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
        limit: i64,
        /// Print a JSON array, one object per firing
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// One job with its whole history of states and the tail of a command's output
    Show {
        /// The job's id, or a unique start or end of it (the web shows the last 8 characters)
        id: String,
        /// Print the job and its history as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Revoke jobs: a queued one never runs; a running one finishes unless --terminate; kept
    /// for ids not yet known, and across worker restarts
    Revoke {
        /// Whole job ids (a revoke is kept for an id no worker has seen yet)
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Also stop a running job: its command's process group gets the signal, then SIGKILL
        #[arg(long)]
        terminate: bool,
        /// The signal for --terminate (implies it): TERM, KILL, INT, HUP, QUIT, USR1, USR2
        #[arg(long, value_name = "SIG")]
        signal: Option<String>,
        /// Print a JSON array, one object per job
        #[arg(long)]
        json: bool,
    },
    /// Delete the finished jobs [retention] lets go, now, and say how many
    Prune {
        /// Only count them
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a job that ended FAILURE or REVOKED again, as a new job (its id printed); the jobs
    /// its end revoked (`--after` it) wait again, for the new one
    Retry {
        /// The job's id, or a unique start or end of it
        id: String,
    },
    /// The whole workflow a job is part of, from its roots: every job with its state
    Tree {
        /// The job's id, or a unique start or end of it
        id: String,
        /// Print the workflow as one JSON object (roots, jobs, edges)
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Delete every job record (asks first unless --yes)
    Reset {
        /// Do not ask: delete them (for scripts, or without a terminal)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCmd {
    /// List dead-lettered messages with the reason (they stay where they are)
    List {
        /// Only this work queue's dead letters
        #[arg(long)]
        queue: Option<String>,
        /// Print a JSON array, one object per message
        #[arg(long)]
        json: bool,
    },
    /// Publish dead-lettered messages back to their work queue
    Requeue {
        /// Only this work queue's dead letters [default: every queue's]
        #[arg(long)]
        queue: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Stop the named workers (all if none) if running, start them, wait until each consumes
    Start {
        /// Worker names from fabfile.toml, e.g. p1 l2 [default: every worker]
        names: Vec<String>,
    },
    /// SIGTERM, let running jobs finish within the grace period, then SIGKILL
    Stop {
        /// Worker names from fabfile.toml [default: every worker]
        names: Vec<String>,
    },
    /// Rolling restart: one worker at a time, so a queue never loses all its consumers
    Restart {
        /// Worker names from fabfile.toml [default: every worker]
        names: Vec<String>,
    },
    /// Name, queue, pid, state, uptime, memory and jobs done of each worker
    Status {
        /// Worker names from fabfile.toml [default: every worker]
        names: Vec<String>,
        /// Print a JSON array instead of a table
        #[arg(long)]
        json: bool,
        /// Every worker of these queues on every host, asked through the broker
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Kill every worker of this config, orphans included, and remove stale pid files
    Clean {
        /// Also delete the workers' log files
        #[arg(long)]
        logs: bool,
    },
    /// Stop taking jobs from QUEUE (running ones finish; messages stay queued in the broker),
    /// on every host or one; kept in the store across restarts until `cm queue resume`
    Pause {
        /// A queue of fabfile.toml [queues]
        queue: String,
        /// Only the queue's workers on this host (as node names end: name@HOST)
        #[arg(long)]
        host: Option<String>,
        /// Also stop the running jobs; they go back to the queue and run again on resume
        #[arg(long)]
        terminate: bool,
    },
    /// Take jobs from QUEUE again, on every host (clearing every narrower pause) or one
    Resume {
        /// A queue of fabfile.toml [queues]
        queue: String,
        /// Only the queue's workers on this host
        #[arg(long)]
        host: Option<String>,
    },
    /// Run N jobs at once on each worker of QUEUE, without a restart (prefetch follows); kept
    /// in the store across restarts
    Scale {
        /// A queue of fabfile.toml [queues]
        queue: String,
        /// Job slots per worker
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        concurrency: u16,
        /// Only the queue's workers on this host
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Start every worker (as `cm queue start`) and the web server on [web] bind (as
    /// `cm web --detach`; not with [web] enabled = false); running ones are stopped first
    Start,
    /// Stop every worker gracefully (running jobs finish, nothing is lost) and the web server
    Stop,
    /// Kill every worker and the web server, orphans included, and remove stale pid files
    Clean {
        /// Also delete the workers' and the web server's log files
        #[arg(long)]
        logs: bool,
    },
    /// `cm queue status` and the web server's url, pid and state
    Status {
        /// Print {"workers": [...], "web": {...}} instead of a table
        #[arg(long)]
        json: bool,
        /// Every worker on every host, asked through the broker
        #[arg(long)]
        all: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument `--help` lists says what it is for.
    #[test]
    fn every_argument_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "cm", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }
}

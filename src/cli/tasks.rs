//! `cm tasks ...`: what operators set on a task for every worker, kept in the store.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Set a task's rate limit for every worker on every host, over fabfile.toml's rate_limit
    /// (kept in the status store across restarts; what `celery control rate_limit` sets)
    Rate {
        /// A task of fabfile.toml [tasks]
        task: String,
        /// "10/m" (N/s, N/m or N/h; a bare N is per second), "off" (no limit at all), or
        /// "config" (back to fabfile.toml's rate_limit, or none)
        rate: String,
    },
    /// The rate limits operators set (`cm tasks rate`, `celery control rate_limit`)
    Rates {
        /// Print a JSON array instead of lines
        #[arg(long)]
        json: bool,
    },
}

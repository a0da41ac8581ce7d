use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let cli = cm::cli::Cli::parse();
    let default_level = match cli.command {
        cm::cli::Command::Worker { .. } => "info",
        // `cm mq status` probes queues that may not exist; lapin logs each 404 as an error.
        cm::cli::Command::Mq(_) => "warn,lapin::channel=off",
        _ => "warn",
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // `level` or `target=level` lists, as RUST_LOG is usually written. Not EnvFilter: its span
    // and field filters bring a regex engine into every worker.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .or_else(|| default_level.parse().ok())
        .unwrap_or_default();
    let log = tracing_subscriber::fmt::layer()
        // A worker's buffered job lines first, so its log keeps the order things happened in.
        .with_writer(|| {
            cm::joblog::flush();
            std::io::stderr()
        })
        .with_target(false)
        .with_ansi(ansi);
    tracing_subscriber::registry().with(log).with(filter).init();
    match cm::commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("cm: {e:#}");
            cm::exit::code_for(&e).into()
        }
    }
}

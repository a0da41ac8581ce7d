use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cm::cli::Cli::parse();
    let default_level = match cli.command {
        cm::cli::Command::Worker { .. } => "info",
        // `cm mq status` probes queues that may not exist; lapin logs each 404 as an error.
        cm::cli::Command::Mq(_) => "warn,lapin::channel=off",
        _ => "warn",
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    match cm::commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("cm: {e:#}");
            cm::exit::code_for(&e).into()
        }
    }
}

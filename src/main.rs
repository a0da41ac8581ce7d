use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// lapin's WARN for every message the broker returns, with its body as a list of decimal
/// bytes. cm reports a return itself, once, where it matters (a publish not confirmed), and an
/// expected one (a reply whose waiter is gone) at debug.
const LAPIN_RETURNS: &str = "lapin::returned_messages";

/// Whether `RUST_LOG` asks for lapin's return lines by name; they are off otherwise.
fn returns_asked() -> bool {
    std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains(LAPIN_RETURNS))
}

fn main() -> ExitCode {
    let cli = cm::cli::Cli::parse();
    let default_level = match (&cli.command, cli.verbose) {
        // A worker's and the web server's logs keep what their libraries say.
        (cm::cli::Command::Worker { .. }, _) => "info",
        (cm::cli::Command::Web(_), 0 | 1) => "warn",
        // A command's stderr is cm's own: a library's ERROR for a call that succeeded (lapin
        // on a closing channel, a 404 of a probed queue) is noise there.
        (_, 0) => "cm=warn",
        (_, 1) => "warn",
        (_, 2) => "info",
        _ => "debug",
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // `level` or `target=level` lists, as RUST_LOG is usually written. Not EnvFilter: its span
    // and field filters bring a regex engine into every worker.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .and_then(|spec| spec.parse::<Targets>().ok())
        .or_else(|| default_level.parse().ok())
        .unwrap_or_default();
    let filter = if returns_asked() {
        filter
    } else {
        filter.with_target(LAPIN_RETURNS, tracing_subscriber::filter::LevelFilter::OFF)
    };
    let log = tracing_subscriber::fmt::layer()
        // A worker's buffered job lines first, so its log keeps the order things happened in;
        // each line stays one line whatever values it carries.
        .with_writer(move || {
            cm::joblog::flush();
            cm::joblog::OneLine::new(std::io::stderr(), ansi)
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

//! `cm completions SHELL` and `cm man`: generated from the clap types, so they never drift.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Code;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Code> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cm", &mut out);
    write_stdout(&out)
}

/// The top page on stdout, or (with `out`) every page as files, the way packagers install them.
pub fn man(out: Option<&Path>) -> anyhow::Result<Code> {
    let cmd = Cli::command();
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating man page folder {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            crate::outln!("man pages written to {}", dir.display());
            Ok(Code::Success)
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the man page")?;
            write_stdout(&page)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<Code> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // `cm man | head` closing the pipe early is not a failure of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Code::Success),
        other => other.map(|()| Code::Success).context("writing to stdout"),
    }
}

//! `cm logs NAME [-f] [-n LINES]`: the tail of a worker's log, and optionally everything after.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::cli::LogsArgs;
use crate::config::Config;
use crate::control;
use crate::exit::{CmError, Code};

/// How often `-f` looks for growth, truncation or a new file; `tail -F` polls once a second.
const POLL: Duration = Duration::from_millis(200);
/// How much of the file's end is read at a time while looking back for LINES newlines.
const CHUNK: u64 = 64 * 1024;

pub async fn show(cfg: &Config, args: &LogsArgs) -> anyhow::Result<Code> {
    let worker = control::select(cfg, std::slice::from_ref(&args.name))?;
    let name = worker.first().map_or(args.name.as_str(), |w| w.name);
    let path = cfg.log_file(name);
    let mut out = std::io::stdout().lock();
    let result = match File::open(&path) {
        Ok(mut file) => {
            let end = print_tail(&mut file, args.lines, &mut out)
                .with_context(|| format!("reading {}", path.display()))?;
            if args.follow {
                follow(&path, Some((file, end)), &mut out).await
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !args.follow {
                return Err(CmError::Other(format!(
                    "no log at {}: worker {name} has not run with this config (start it with `cm queue start {name}`)",
                    path.display()
                ))
                .into());
            }
            // Following a worker that has not started yet: its log appears when it does.
            follow(&path, None, &mut out).await
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening {}", path.display()))),
    };
    match result {
        // `cm logs p1 -f | grep -m1 ...` closing the pipe is how a reader says it has enough.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(Code::Success)
        }
        other => other.map(|()| Code::Success),
    }
}

/// Writes the last `lines` lines of `file` and returns the offset it read up to.
fn print_tail(file: &mut File, lines: usize, out: &mut impl Write) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let start = tail_start(file, len, lines)?;
    file.seek(SeekFrom::Start(start))?;
    let copied = std::io::copy(&mut file.take(len - start), out)?;
    out.flush()?;
    Ok(start + copied)
}

/// Offset where the last `lines` lines of the first `len` bytes begin (a last line without its
/// newline counts as a line).
fn tail_start(file: &mut File, len: u64, lines: usize) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut newlines = 0;
    let mut pos = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while pos > 0 {
        let size = CHUNK.min(pos);
        pos -= size;
        let chunk = &mut buf[..size as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            // The file's final newline ends the last line; it does not start another.
            if *byte == b'\n' && pos + i as u64 + 1 != len {
                newlines += 1;
                if newlines == lines {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
    }
    Ok(0)
}

/// Prints whatever is appended to `path` until killed. `open`: the file already printed up to
/// its offset. A new inode (rotation) or a shorter file (truncation) starts again from the top,
/// after the rest of the old file is printed.
async fn follow(
    path: &Path,
    mut open: Option<(File, u64)>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    loop {
        if let Some((file, pos)) = open.as_mut() {
            *pos += copy_new(file, *pos, out)?;
        }
        let current = std::fs::metadata(path).ok();
        let replaced = match (&open, &current) {
            (Some((file, pos)), Some(meta)) => {
                let ours = file.metadata()?;
                ours.ino() != meta.ino() || ours.dev() != meta.dev() || meta.len() < *pos
            }
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if replaced {
            match File::open(path) {
                Ok(file) => open = Some((file, 0)),
                // Between the rename and the new file: try again on the next round.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
                }
            }
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Copies everything from `pos` to the current end of `file`; returns how many bytes.
fn copy_new(file: &mut File, pos: u64, out: &mut impl Write) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len <= pos {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(pos))?;
    let copied = std::io::copy(&mut file.take(len - pos), out)?;
    out.flush()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &str, lines: usize) -> String {
        let mut f = tempfile::tempfile().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        let mut out = Vec::new();
        print_tail(&mut f, lines, &mut out).expect("tail");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn tail_crosses_chunk_boundaries() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&text, 3), "line 19997\nline 19998\nline 19999\n");
    }
}

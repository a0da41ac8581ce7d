//! `cm logs NAME [-f] [-n LINES]`: the tail of a worker's log, and optionally everything after;
//! `cm logs --queue Q [-f]`: the same over a queue's workers, merged in time order;
//! `cm logs --job ID`: one job's lines from every worker of this config that ran it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    let mut out = std::io::stdout().lock();
    let result = match (&args.job, &args.queue, &args.name) {
        (Some(id), _, _) => job(cfg, id, &mut out).await,
        (None, Some(queue), _) => queue_logs(cfg, queue, args, &mut out).await,
        (None, None, Some(name)) => worker(cfg, name, args, &mut out).await,
        (None, None, None) => Err(CmError::BadArgument(
            "say which log: a worker NAME, --queue QUEUE or --job ID".into(),
        )
        .into()),
    };
    match result {
        // `cm logs p1 -f | grep -m1 ...` closing the pipe is how a reader says it has enough.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(Code::Success)
        }
        other => other,
    }
}

async fn worker(
    cfg: &Config,
    name: &str,
    args: &LogsArgs,
    out: &mut impl Write,
) -> anyhow::Result<Code> {
    let worker = control::select(cfg, &[name.to_string()])?;
    let name = worker.first().map_or(name, |w| w.name);
    let path = cfg.log_file(name);
    let (mut tail, text) = match Tail::last_lines(&path, args.lines) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            return Err(CmError::Other(format!(
                "no log at {}: worker {name} has not run with this config (start it with `cm queue start {name}`)",
                path.display()
            ))
            .into());
        }
        // Following a worker that has not started yet: its log appears when it does.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Tail::waiting(&path), Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("opening {}", path.display()))),
    };
    out.write_all(&text)?;
    out.flush()?;
    if args.follow {
        loop {
            let new = tail
                .poll()
                .with_context(|| format!("reading {}", path.display()))?;
            out.write_all(&new)?;
            out.flush()?;
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(Code::Success)
}

async fn queue_logs(
    cfg: &Config,
    queue: &str,
    args: &LogsArgs,
    out: &mut impl Write,
) -> anyhow::Result<Code> {
    let q = cfg.queues.iter().find(|q| q.name == queue).ok_or_else(|| {
        CmError::BadArgument(format!(
            "unknown queue {queue:?}: this config has {}",
            cfg.queues
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut tails = Vec::new();
    let mut lines = Merge::default();
    for name in &q.workers {
        let path = cfg.log_file(name);
        match Tail::last_lines(&path, args.lines) {
            Ok((tail, text)) => {
                lines.add(tails.len(), &text);
                tails.push(tail);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => tails.push(Tail::waiting(&path)),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
            }
        }
    }
    let first = lines.take_sorted();
    let skip = first.len().saturating_sub(args.lines);
    for line in &first[skip..] {
        out.write_all(line)?;
    }
    out.flush()?;
    if !args.follow {
        if tails.iter().all(Tail::is_waiting) {
            return Err(CmError::Other(format!(
                "no logs yet for queue {queue} in {}: its workers have not run with this config (`cm queue start`)",
                cfg.log_dir.display()
            ))
            .into());
        }
        return Ok(Code::Success);
    }
    loop {
        for (i, tail) in tails.iter_mut().enumerate() {
            let new = tail
                .poll()
                .with_context(|| format!("reading {}", tail.path.display()))?;
            lines.add(i, &new);
        }
        for line in lines.take_sorted() {
            out.write_all(&line)?;
        }
        out.flush()?;
        tokio::time::sleep(POLL).await;
    }
}

/// Every line of job `id` ([`names_job`]) in the logs of this config's workers (and their last rotated
/// file), oldest first.
async fn job(cfg: &Config, id: &str, out: &mut impl Write) -> anyhow::Result<Code> {
    if id.len() < 8 {
        return Err(CmError::BadArgument(format!(
            "job id {id:?} is too short to search for: give the whole id (`cm jobs` lists them)"
        ))
        .into());
    }
    let mut lines = Merge::default();
    for (i, w) in cfg.workers().enumerate() {
        let log = cfg.log_file(w.name);
        let rotated = PathBuf::from(format!("{}.1", log.display()));
        for path in [rotated, log] {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("opening {}", path.display())))
                }
            };
            for line in BufReader::new(file).split(b'\n') {
                let mut line = line.with_context(|| format!("reading {}", path.display()))?;
                if names_job(&line, id.as_bytes()) {
                    line.push(b'\n');
                    lines.push(i, line);
                }
            }
        }
    }
    let found = lines.take_sorted();
    for line in &found {
        out.write_all(line)?;
    }
    out.flush()?;
    if found.is_empty() {
        return Err(CmError::Other(format!(
            "no lines for job {id} in the logs of this config's workers ({}); `cm jobs show {id}` says where it ran",
            cfg.log_dir.display()
        ))
        .into());
    }
    Ok(Code::Success)
}

/// Whether `line` is one of job `id`'s: the first ` job ` in it is followed by the id, as in
/// a job line (`[time] node job ID task: ...`) and a tracing line (`... WARN job ID: ...`).
/// The id anywhere else is a value another job carried (escaped onto its own line), not this
/// job's history.
fn names_job(line: &[u8], id: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(line, b" job ") else {
        return false;
    };
    let Some(rest) = line[at + 5..].strip_prefix(id) else {
        return false;
    };
    matches!(rest.first(), None | Some(b' ' | b':' | b';' | b','))
}

/// Lines from several logs, put in time order by the stamp each begins with: a job line's
/// `[2026-12-01T19:47:42.750Z]` or a tracing line's `2026-12-01T19:47:42.750123Z`. A line with
/// no stamp (the rest of a multi-line message) keeps the stamp of the line before it.
#[derive(Default)]
struct Merge {
    lines: Vec<(SystemTime, usize, Vec<u8>)>,
    /// Per log: an unfinished last line, and the stamp of its last line.
    partial: Vec<(Vec<u8>, SystemTime)>,
}

impl Merge {
    /// Adds `bytes` read from log `from`; an unfinished last line waits for its end.
    fn add(&mut self, from: usize, bytes: &[u8]) {
        self.grow(from);
        let mut rest = std::mem::take(&mut self.partial[from].0);
        rest.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &rest[start..]) {
            let line = rest[start..start + end + 1].to_vec();
            self.push(from, line);
            start += end + 1;
        }
        self.partial[from].0 = rest[start..].to_vec();
    }

    /// Adds one whole line of log `from`.
    fn push(&mut self, from: usize, line: Vec<u8>) {
        self.grow(from);
        let at = stamp(&line).unwrap_or(self.partial[from].1);
        self.partial[from].1 = at;
        self.lines.push((at, from, line));
    }

    fn grow(&mut self, from: usize) {
        if self.partial.len() <= from {
            self.partial
                .resize(from + 1, (Vec::new(), SystemTime::UNIX_EPOCH));
        }
    }

    /// The whole lines so far, oldest first (a stable sort: one log's lines of the same
    /// millisecond keep their order).
    fn take_sorted(&mut self) -> Vec<Vec<u8>> {
        let mut lines = std::mem::take(&mut self.lines);
        lines.sort_by_key(|(at, from, _)| (*at, *from));
        lines.into_iter().map(|(_, _, line)| line).collect()
    }
}

fn stamp(line: &[u8]) -> Option<SystemTime> {
    let text = line.strip_prefix(b"[").unwrap_or(line);
    let end = memchr::memchr2(b']', b' ', text)?;
    let text = std::str::from_utf8(&text[..end]).ok()?;
    humantime::parse_rfc3339(text).ok()
}

/// One log file read from an offset on, through rotation (a new file at the path) and
/// truncation (a shorter file): the rest of the old file first, then the new one from its top.
struct Tail {
    path: PathBuf,
    open: Option<(File, u64)>,
}

impl Tail {
    /// The last `lines` lines of the file at `path`, and the file to follow from there.
    fn last_lines(path: &Path, lines: usize) -> std::io::Result<(Self, Vec<u8>)> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = tail_start(&mut file, len, lines)?;
        file.seek(SeekFrom::Start(start))?;
        let mut text = Vec::new();
        (&mut file).take(len - start).read_to_end(&mut text)?;
        let end = start + text.len() as u64;
        Ok((
            Self {
                path: path.to_path_buf(),
                open: Some((file, end)),
            },
            text,
        ))
    }

    /// A log that does not exist yet: followed from its first byte once it does.
    fn waiting(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            open: None,
        }
    }

    fn is_waiting(&self) -> bool {
        self.open.is_none()
    }

    /// What was appended since the last call.
    fn poll(&mut self) -> std::io::Result<Vec<u8>> {
        let mut new = Vec::new();
        loop {
            if let Some((file, pos)) = self.open.as_mut() {
                *pos += read_new(file, *pos, &mut new)?;
            }
            let current = std::fs::metadata(&self.path).ok();
            let replaced = match (&self.open, &current) {
                (Some((file, pos)), Some(meta)) => {
                    let ours = file.metadata()?;
                    ours.ino() != meta.ino() || ours.dev() != meta.dev() || meta.len() < *pos
                }
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if !replaced {
                return Ok(new);
            }
            match File::open(&self.path) {
                Ok(file) => self.open = Some((file, 0)),
                // Between the rename and the new file: try again on the next round.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(new),
                Err(e) => return Err(e),
            }
        }
    }
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

/// Appends everything from `pos` to the current end of `file` to `out`; returns how many bytes.
fn read_new(file: &mut File, pos: u64, out: &mut Vec<u8>) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len <= pos {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(pos))?;
    file.take(len - pos).read_to_end(out).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_lines_are_those_that_name_it_where_a_job_is_named() {
        let id = b"0199aaaa-0000-7000-8000-000000000001";
        let mine = [
            "[2026-12-01T19:47:42.750Z] l1@h job 0199aaaa-0000-7000-8000-000000000001 cm.launch: SUCCESS",
            "2026-12-01T19:47:42.750123Z  WARN job 0199aaaa-0000-7000-8000-000000000001: the store is down",
            "2026-12-01T19:47:42.750123Z  WARN revoke of job 0199aaaa-0000-7000-8000-000000000001; sending TERM",
        ];
        for line in mine {
            assert!(names_job(line.as_bytes(), id), "{line}");
        }
        let others = [
            // Another job's value, carrying this id: escaped onto that job's own line.
            "[2026-12-01T19:47:42.750Z] l1@h job 0199bbbb-0000-7000-8000-000000000002 cm.launch: RECEIVED hosts=h1\\n[2026-12-01T19:47:43.000Z] l1@h job 0199aaaa-0000-7000-8000-000000000001 cm.launch: FAILURE forged",
            "[2026-12-01T19:47:42.750Z] l1@h job 0199aaaa-0000-7000-8000-0000000000012 cm.launch: SUCCESS",
            "no job here",
        ];
        for line in others {
            assert!(!names_job(line.as_bytes(), id), "{line}");
        }
    }

    fn tail(text: &str, lines: usize) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        std::fs::write(&path, text).expect("write");
        let (_, out) = Tail::last_lines(&path, lines).expect("tail");
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

    #[test]
    fn a_followed_file_is_read_on_through_rotation() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        std::fs::write(&path, "a\n")?;
        let (mut t, first) = Tail::last_lines(&path, 5)?;
        assert_eq!(first, b"a\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(b"b\n")?;
        std::fs::rename(&path, dir.path().join("log.1"))?;
        std::fs::write(&path, "c\n")?;
        assert_eq!(t.poll()?, b"b\nc\n");
        assert_eq!(t.poll()?, b"");
        Ok(())
    }

    #[test]
    fn logs_merge_in_time_order_and_continuations_stay_with_their_line() {
        let mut m = Merge::default();
        m.add(
            0,
            b"[2026-12-01T10:00:00.002Z] a2\n2026-12-01T10:00:00.004000Z  WARN a4\n  more of a4\n[2026-12-01T10:00:00.0",
        );
        m.add(
            1,
            b"[2026-12-01T10:00:00.001Z] b1\n[2026-12-01T10:00:00.003Z] b3\n[2026-12-01T10:00:00.005Z] b5\n",
        );
        let text: Vec<String> = m
            .take_sorted()
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l).trim_end().to_string())
            .collect();
        let tails: Vec<&str> = text
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(tails, ["b1", "a2", "b3", "a4", "a4", "b5"]);
        m.add(0, b"06Z] a6\n");
        let next = m.take_sorted();
        assert_eq!(next, [b"[2026-12-01T10:00:00.006Z] a6\n".to_vec()]);
    }
}

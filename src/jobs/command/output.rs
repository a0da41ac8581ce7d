//! A command's output: its two streams read line by line (long lines cut), the tail kept for
//! the store, and the `cm-state: NAME` lines that announce a step.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// A longer line is cut into pieces of this size: output cannot grow a line without end.
pub(super) const MAX_LINE: usize = 16 * 1024;
/// How much of a job's output stays with it in the store.
pub const TAIL_BYTES: usize = 64 * 1024;
/// What prints this on a line of its own records step NAME in the job's history.
pub(super) const STATE_PREFIX: &str = "cm-state: ";

/// Which of the command's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn label(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// Reads the next line (without its newline, at most [`MAX_LINE`] bytes) into `buf`; false at
/// the end of the stream (a last line without a newline is still a line).
pub(super) async fn next_line<R: AsyncBufRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Some(reader) = reader else {
        return std::future::pending().await;
    };
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let room = MAX_LINE - buf.len();
        match memchr::memchr(b'\n', &available[..available.len().min(room)]) {
            Some(i) => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                return Ok(true);
            }
            None => {
                let take = available.len().min(room);
                buf.extend_from_slice(&available[..take]);
                reader.consume(take);
                if buf.len() >= MAX_LINE {
                    return Ok(true);
                }
            }
        }
    }
}

/// A step a command may name: short, plain, and not one of cm's own states (a step named
/// SUCCESS would read as the job's end before it ends).
pub(super) fn valid_state(name: &str) -> bool {
    !name.is_empty()
        && !crate::store::is_cm_state(name)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The last [`TAIL_BYTES`] of a command's output, whole lines, `err:` marking stderr's.
#[derive(Default)]
pub(super) struct Tail {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
}

impl Tail {
    pub(super) fn push(&mut self, stream: Stream, text: &str) {
        let line = match stream {
            Stream::Out => text.to_string(),
            Stream::Err => format!("err: {text}"),
        };
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > TAIL_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
            }
        }
    }

    pub(super) fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes);
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

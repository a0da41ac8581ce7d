//! `--wait`: follow a published batch until every job is final; what CI smoke tests call.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::client::publish::Batch;
use crate::exit::{CmError, Code};
use crate::store::{self, JobFilter, Store};

const POLL: Duration = Duration::from_millis(200);
/// Near the end, the next poll comes when the rate so far says the last job is done, but no
/// sooner than this: a batch that finishes between two polls is not reported up to POLL late.
const POLL_MIN: Duration = Duration::from_millis(20);
/// Without a terminal, a progress line at most this often.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// Waits until the `total` jobs of `batch` are final. With its replies, the store is read again
/// as soon as they say the last one is final.
pub async fn batch(
    store: &Store,
    batch: Batch,
    total: usize,
    timeout_s: f64,
) -> anyhow::Result<Code> {
    let Batch {
        id,
        mut replies,
        duplicates,
    } = batch;
    // A job whose unique key was held was not published: its holder is another batch's.
    let total = total.saturating_sub(duplicates.len());
    let jobs = total;
    let filter = JobFilter {
        batch: Some(id),
        ..JobFilter::default()
    };
    let total = total as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s.max(0.0));
    let quiet = crate::output::quiet();
    let bar = (std::io::stderr().is_terminal() && !quiet).then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} final, {msg} [{elapsed}]")
        {
            bar.set_style(style);
        }
        bar
    });
    let mut last_line: Option<(Instant, u64)> = None;
    let started = Instant::now();
    loop {
        let counts = store.counts_by_state(&filter).await?;
        let count = |pred: fn(&str) -> bool| -> u64 {
            counts
                .iter()
                .filter(|(s, _)| pred(s))
                .map(|(_, n)| *n as u64)
                .sum()
        };
        let done = count(store::is_final);
        let failed = count(|s| s == store::FAILURE || s == store::REVOKED);
        match &bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{failed} failed"));
            }
            None => {
                let due = last_line.is_none_or(|(at, n)| n != done && at.elapsed() >= LINE_EVERY);
                if (due || done == total) && !quiet {
                    eprintln!("progress: {done}/{total} final, {failed} failed");
                    last_line = Some((Instant::now(), done));
                }
            }
        }
        if done >= total {
            if let Some(bar) = &bar {
                bar.finish();
            }
            if failed == 0 {
                if !quiet {
                    eprintln!("all {total} jobs succeeded");
                }
                return Ok(Code::Success);
            }
            let examples = store
                .list(&JobFilter {
                    state: Some(store::FAILURE.into()),
                    limit: 3,
                    ..filter.clone()
                })
                .await?;
            let shown: Vec<String> = examples
                .iter()
                .map(|j| {
                    format!(
                        "{} ({})",
                        j.job.id,
                        j.error.as_deref().unwrap_or("no error text")
                    )
                })
                .collect();
            return Err(CmError::Partial {
                message: format!("{failed} of {total} jobs failed, e.g. {}", shown.join(", ")),
                code: Code::Failure,
            }
            .into());
        }
        if Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            return Err(CmError::Partial {
                message: format!(
                    "timed out after {timeout_s}s: {done} of {total} jobs final ({failed} failed); `cm jobs` shows the rest (are the workers running? `cm queue status`)"
                ),
                code: Code::TempFail,
            }
            .into());
        }
        let pause = next_poll(done, total, started.elapsed());
        match replies.as_mut() {
            // Heard of all but not all final in the store: a reply of an older job's, say.
            // Polling then, as without replies.
            Some(r) if r.heard() < jobs => r.until(jobs, pause).await,
            _ => tokio::time::sleep(pause).await,
        }
    }
}

/// How long until the next poll: [`POLL`], or less when the rate so far says the rest will be
/// final sooner.
fn next_poll(done: u64, total: u64, elapsed: Duration) -> Duration {
    if done == 0 {
        return POLL;
    }
    let left = elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64);
    left.clamp(POLL_MIN, POLL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_sooner_only_when_the_rate_says_the_end_is_near() {
        let s = Duration::from_secs(1);
        assert_eq!(next_poll(0, 100, s), POLL, "no rate yet");
        assert_eq!(next_poll(10, 100, s), POLL, "9 s to go");
        let near = next_poll(95, 100, s); // 5 more at 95 a second
        assert!(
            near > Duration::from_millis(52) && near < Duration::from_millis(53),
            "{near:?}"
        );
        assert_eq!(next_poll(99_999, 100_000, s), POLL_MIN);
    }
}

//! What a queue or a worker may be named: checked when the file is read, so that a name the
//! broker, the file system or a worker's own argv would refuse later is refused at its line.

/// AMQP's short strings (queue names among them) and most file systems' names hold this many
/// bytes at most.
const NAME_MAX: usize = 255;
/// The longest queue name cm derives from a work queue's: its dead letters.
const DEAD_SUFFIX: &str = ".dead";
/// The longest file name cm derives from a worker's: its stats, while being replaced.
const LONGEST_FILE: (&str, &str) = ("celery@", ".stats.partial");
/// The worker's remote-control queue, `NAME@HOST.celery.pidbox` (Celery's name for it).
const PIDBOX_SUFFIX: &str = ".celery.pidbox";

fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why `name` cannot be a queue's, if it cannot.
pub(super) fn queue_problem(name: &str) -> Option<String> {
    if !plain(name) || name.starts_with('.') {
        return Some("letters, digits, '-', '_', '.', not first '.'".into());
    }
    if name.starts_with("amq.") {
        return Some("names starting with \"amq.\" are the broker's own".into());
    }
    let most = NAME_MAX - DEAD_SUFFIX.len();
    (name.len() > most).then(|| {
        format!(
            "{} bytes; at most {most}, so that its dead letters' queue {DEAD_SUFFIX:?} fits the broker's {NAME_MAX}",
            name.len()
        )
    })
}

/// Why `name` cannot be a worker's on host `node_host`, if it cannot: it names files, a
/// process's argument and a queue.
pub(super) fn worker_problem(name: &str, node_host: &str) -> Option<String> {
    if !plain(name) || name.starts_with('.') || name.starts_with('-') {
        return Some("letters, digits, '-', '_', '.', not first '-' or '.'".into());
    }
    let (before, after) = LONGEST_FILE;
    let most = NAME_MAX - before.len() - after.len();
    if name.len() > most {
        return Some(format!(
            "{} bytes; at most {most}, so that its files ({before}NAME{after}) fit a file name",
            name.len()
        ));
    }
    let pidbox = name.len() + 1 + node_host.len() + PIDBOX_SUFFIX.len();
    (pidbox > NAME_MAX).then(|| {
        format!(
            "its remote-control queue NAME@{node_host}{PIDBOX_SUFFIX} would be {pidbox} bytes, over the broker's {NAME_MAX}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_fit_the_broker() {
        assert_eq!(queue_problem("launcher"), None);
        assert_eq!(queue_problem(&"q".repeat(250)), None);
        for bad in ["", ".x", "a b", "a/b", "amq.x", "x\n", &"q".repeat(251)] {
            assert!(queue_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn worker_names_fit_files_argv_and_queues() {
        assert_eq!(worker_problem("p1", "host"), None);
        assert_eq!(worker_problem(&"w".repeat(234), "h"), None);
        for bad in ["", "-rf", ".p", "a/b", "a\u{0}", "p\n1", &"w".repeat(235)] {
            assert!(worker_problem(bad, "h").is_some(), "{bad:?}");
        }
        assert!(worker_problem(&"w".repeat(200), &"h".repeat(60)).is_some());
    }
}

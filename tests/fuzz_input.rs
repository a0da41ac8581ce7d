//! Property tests over the inputs cm sizes and checks before using them: hostlists (however
//! they come: `--hosts`, a config's workers, a `cm.launch` message), queue and worker names,
//! and the lines a worker writes. Bounded (a few thousand cases); a panic, an expansion past
//! its limit or a slow answer is a bug.

use std::path::Path;
use std::time::{Duration, Instant};

use cm::celery::message::TaskMessage;
use cm::config::hostlist::{self, HostlistError};
use cm::config::{Config, ConfigError};
use cm::jobs::Job;
use proptest::prelude::*;

/// One answer, however wrong the input: far below what expanding a typo would take.
const QUICK: Duration = Duration::from_millis(250);

/// Hostlist-like text: names, ranges (reversed, padded, huge), commas, stray brackets and
/// the odd control character.
fn hostlist_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z][a-z0-9.-]{0,6}",
        "\\[[0-9]{1,3}-[0-9]{1,3}\\]",
        "\\[[0-9]{1,20}-[0-9]{1,20}(,[0-9]{1,4}){0,2}\\]",
        "\\[0{0,3}[0-9]{1,3}\\]",
        Just(",".to_string()),
        Just(" ".to_string()),
        "[\\[\\]\\-, \n\t\u{0}a;/é]",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/x/fabfile.toml"), text)
}

fn launch_config() -> Config {
    let text = "[limits]\nmax_hosts = 50\n[queues.launcher]\nworkers = [\"l1\"]\ntasks = [\"cm.launch\"]\n";
    match parse(text) {
        Ok(cfg) => cfg,
        Err(e) => panic!("the fuzz config is valid: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Sizing never panics, answers at once, and bounds what expanding makes: never more
    /// hosts than the size, never more than the limit, never a name longer than a host's.
    #[test]
    fn a_hostlist_is_sized_then_expanded_within_its_limit(
        text in hostlist_text(),
        max in 1usize..200,
    ) {
        let started = Instant::now();
        let size = hostlist::size(&text);
        let expanded = hostlist::expand(&text, max);
        prop_assert!(started.elapsed() < QUICK, "{text:?} took {:?}", started.elapsed());
        match (&size, &expanded) {
            (Ok(size), Ok(hosts)) => {
                prop_assert!(hosts.len() as u128 <= size.hosts, "{text:?}: {size:?} {}", hosts.len());
                prop_assert!(hosts.len() <= max);
                for h in hosts {
                    prop_assert!(h.len() <= size.longest && h.len() <= hostlist::MAX_NAME, "{text:?}: {h:?}");
                    prop_assert!(!h.chars().any(char::is_control), "{text:?}: {h:?}");
                }
            }
            (Ok(size), Err(HostlistError::TooMany { hosts, .. })) => {
                prop_assert_eq!(*hosts, size.hosts);
                prop_assert!(size.hosts > max as u128);
            }
            (Ok(_), Err(_)) => {}
            (Err(e), Err(f)) => prop_assert_eq!(e, f),
            (Err(e), Ok(hosts)) => prop_assert!(false, "{text:?}: sized {e:?}, expanded {hosts:?}"),
        }
        if let Err(e) = &expanded {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    /// A config's workers, as a hostlist or a list of names: a config or a located error,
    /// at once, with at most `[limits] max_workers` names, each a valid worker name.
    #[test]
    fn a_configs_workers_are_bounded_and_named_or_a_located_error(
        pattern in hostlist_text(),
        list in proptest::collection::vec("[a-z.\\-_/ ]{0,3}[a-z0-9]{0,4}", 0..4),
        as_list in any::<bool>(),
        queue in "(amq\\.)?[a-z._-]{1,6}|q{250,260}",
        max_workers in 1u32..40,
    ) {
        let workers = if as_list {
            serde_json::to_string(&list).unwrap_or_default()
        } else {
            serde_json::to_string(&pattern).unwrap_or_default()
        };
        let text = format!(
            "[limits]\nmax_workers = {max_workers}\n[queues.\"{queue}\"]\nworkers = {workers}\n"
        );
        let started = Instant::now();
        let parsed = parse(&text);
        prop_assert!(started.elapsed() < QUICK, "{text:?}");
        match parsed {
            Ok(cfg) => {
                prop_assert!(cfg.workers().count() <= max_workers as usize);
                prop_assert!(!queue.starts_with("amq.") && queue.len() <= 250, "{queue}");
                for w in cfg.workers() {
                    prop_assert!(!w.name.starts_with(['-', '.']), "{}", w.name);
                    prop_assert!(w.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{}", w.name);
                    prop_assert!(cfg.pid_file(w.name).file_name().is_some_and(|f| f.len() <= 255));
                }
            }
            Err(ConfigError::Invalid { line, column, message, .. }) => {
                prop_assert!(line >= 1 && column >= 1);
                prop_assert!(!message.contains('\n'), "{message}");
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("/x/fabfile.toml"), "{msg}");
            }
        }
    }

    /// A `cm.launch` message's hosts, whatever they are: bound at once to a launch within
    /// `[limits] max_hosts`, or to an unfit job whose reason is one line.
    #[test]
    fn a_launch_messages_hosts_bind_at_once_or_make_an_unfit_job(hosts in hostlist_text()) {
        let cfg = launch_config();
        let kwargs = serde_json::json!({
            "server": "india_openstack_essex", "recipe": "Hadoop", "hosts": hosts
        });
        let msg = TaskMessage::new(
            "cm.launch",
            vec![],
            kwargs.as_object().cloned().unwrap_or_default(),
        );
        let started = Instant::now();
        let job = Job::from_message(&msg, &cfg);
        prop_assert!(started.elapsed() < QUICK, "{hosts:?}");
        match job {
            Ok(Job::Launch(l)) => {
                let size = hostlist::size(&l.hosts);
                prop_assert!(l.hosts.is_empty() || size.is_ok_and(|s| s.hosts <= 50), "{hosts:?}");
            }
            Ok(Job::Unfit { why, .. }) => prop_assert!(!why.contains('\n'), "{why}"),
            other => prop_assert!(false, "{hosts:?}: {other:?}"),
        }
    }

    /// Whatever a tracing line carries, it is written as one line.
    #[test]
    fn a_log_line_is_one_line_whatever_it_carries(
        body in proptest::collection::vec(any::<char>(), 0..80),
        colours in any::<bool>(),
    ) {
        use std::io::Write;
        let line: String = body.into_iter().collect();
        let mut out = cm::joblog::OneLine::new(Vec::new(), colours);
        out.write_all(format!("{line}\n").as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let written = out.into_inner();
        let text = String::from_utf8_lossy(&written);
        prop_assert_eq!(text.matches('\n').count(), 1, "{:?}", text);
        prop_assert!(text.ends_with('\n'));
        let body = &text[..text.len() - 1];
        prop_assert!(
            !body.chars().any(|c| c.is_control() && !(colours && c == '\u{1b}')),
            "{:?}", body
        );
    }
}

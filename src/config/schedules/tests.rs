//! `[schedules.NAME]` and `[retention]` as written: defaults, and each mistake at its place.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::schedules::{CatchUp, Overlap, When};

const QUEUES: &str = r#"
[queues.provisioner]
workers = "p[1-2]"
tasks = ["cm.provision"]
"#;

fn parse(extra: &str) -> Result<Config, ConfigError> {
    Config::parse(
        Path::new("/etc/cm/fabfile.toml"),
        &format!("{QUEUES}{extra}"),
    )
}

/// The error's line, column and message.
fn refused(extra: &str) -> (usize, usize, String) {
    match parse(extra) {
        Err(ConfigError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected a refusal at a place, got {other:?}"),
    }
}

#[test]
fn a_schedule_gets_its_defaults_and_its_arguments() -> Result<(), ConfigError> {
    let c = parse(
        r#"
[schedules.nightly]
task = "cm.provision"
kwargs = { host = "db1", image = "ubuntu" }
cron = "30 2 * * *"
"#,
    )?;
    let s = &c.schedules["nightly"];
    assert_eq!(s.queue, "provisioner");
    assert_eq!(s.args, r#"[[],{"host":"db1","image":"ubuntu"}]"#);
    assert_eq!(s.timezone, chrono_tz::UTC);
    assert_eq!(
        (s.catch_up, s.overlap, s.max_catch_up),
        (CatchUp::Once, Overlap::Skip, 100)
    );
    assert_eq!(s.expression(), "cron 30 2 * * * (UTC)");
    assert!(c.retention.is_none(), "no [retention]: keep everything");
    let e = parse(
        "[schedules.e]\ntask = \"cm.provision\"\nargs = [\"h1\", \"img\"]\nevery = \"30s\"\n\
         timezone = \"Europe/Berlin\"\ncatch_up = \"all\"\nmax_catch_up = 5\noverlap = \"allow\"\n",
    )?;
    let s = &e.schedules["e"];
    assert!(matches!(s.when, When::Every(d) if d == Duration::from_secs(30)));
    assert_eq!(s.args, r#"[["h1","img"],{}]"#);
    assert_eq!(s.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        (s.catch_up, s.overlap, s.max_catch_up),
        (CatchUp::All, Overlap::Allow, 5)
    );
    Ok(())
}

#[test]
fn mistakes_are_refused_at_their_line_and_column() {
    let head = "[schedules.s]\ntask = \"cm.provision\"\n";
    // Line 1 of `extra` is the file's line 5 (QUEUES has four).
    let (line, column, message) = refused(&format!("{head}cron = \"61 * * * *\"\n"));
    assert_eq!((line, column), (7, 8), "{message}");
    assert!(
        message.contains("schedules.s.cron") && message.contains("61"),
        "{message}"
    );
    let (line, _, message) = refused(&format!("{head}cron = \"* * *\"\n"));
    assert_eq!(line, 7);
    assert!(message.contains("3 fields"), "{message}");
    let (line, column, message) = refused(&format!(
        "{head}every = \"1m\"\ntimezone = \"Mars/Olympus\"\n"
    ));
    assert_eq!((line, column), (8, 12), "{message}");
    assert!(
        message.contains("unknown time zone \"Mars/Olympus\""),
        "{message}"
    );
    let (line, column, message) = refused("[schedules.s]\ntask = \"ops.backup\"\nevery = \"1m\"\n");
    assert_eq!((line, column), (6, 8), "{message}");
    assert!(
        message.contains("no queue lists \"ops.backup\""),
        "{message}"
    );
    let (line, _, message) = refused(&format!("{head}every = \"soon\"\n"));
    assert_eq!(line, 7);
    assert!(message.contains("schedules.s.every"), "{message}");
    let (line, _, message) = refused(&format!("{head}every = \"500ms\"\n"));
    assert_eq!(line, 7);
    assert!(message.contains("at least 1s"), "{message}");
    let (_, _, message) = refused(&format!("{head}every = \"1m\"\ncatch_up = \"twice\"\n"));
    assert!(message.contains("skip, once, all"), "{message}");
    let (_, _, message) = refused(&format!("{head}every = \"1m\"\noverlap = \"queue\"\n"));
    assert!(message.contains("skip, allow"), "{message}");
    let (_, _, message) = refused(head);
    assert!(message.contains("no cron or every"), "{message}");
    let (_, _, message) = refused(&format!("{head}every = \"1m\"\ncron = \"* * * * *\"\n"));
    assert!(message.contains("keep one"), "{message}");
    let (_, _, message) = refused(&format!("{head}every = \"1m\"\nwhen = 3\n"));
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn retention_reads_ages_and_refuses_a_bad_one() -> Result<(), ConfigError> {
    let c = parse("[retention]\nsucceeded = \"7d\"\nfailed = \"30d\"\n")?;
    let r = c.retention.expect("retention");
    assert_eq!(r.succeeded, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(r.failed, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!((r.keep_last, r.interval), (1000, Duration::from_secs(300)));
    let (line, column, message) = refused("[retention]\nsucceeded = \"a week\"\n");
    assert_eq!((line, column), (6, 13), "{message}");
    assert!(message.contains("retention.succeeded"), "{message}");
    let (_, _, message) = refused("[retention]\nkeep_last = -1\n");
    assert!(message.contains("retention.keep_last"), "{message}");
    Ok(())
}

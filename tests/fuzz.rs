//! Property tests over everything cm reads from outside: fabfile.toml and message bodies.
//! Bounded (a few thousand cases) so `make test` stays quick; any panic is a bug.

use std::path::Path;

use cm::celery::message::TaskMessage;
use cm::config::{Config, ConfigError};
use cm::jobs::Job;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use proptest::prelude::*;

const VALID: &str = r#"[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[paths]
pid_dir = "var/run"
[queues.provisioner]
workers = "p[1-2]"
tasks = ["cm.provision"]
[queues.launcher]
workers = ["l1", "l2"]
tasks = ["cm.launch"]
concurrency = 2
[simulation]
step_seconds = [0, 0]
"#;

fn check(text: &str) {
    match Config::parse(Path::new("/x/fabfile.toml"), text) {
        Ok(cfg) => assert!(cfg.workers().count() > 0),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("/x/fabfile.toml"),
                "error does not name the file: {msg}"
            );
            assert!(
                !msg.contains('\n') || matches!(e, ConfigError::Invalid { .. }),
                "{msg}"
            );
            if let ConfigError::Invalid { line, column, .. } = e {
                assert!(line >= 1 && column >= 1);
                assert!(
                    line <= text.lines().count().max(1) + 1,
                    "line {line} past the end"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn any_text_is_a_config_or_a_located_error(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn a_valid_config_with_one_edit_is_a_config_or_a_located_error(
        pos in 0usize..VALID.len(),
        cut in 0usize..8,
        insert in "[\\[\\]=\"a-z0-9_. \n{},-]{0,6}",
    ) {
        let mut text = VALID.to_string();
        let pos = (0..=pos).rev().find(|p| text.is_char_boundary(*p)).unwrap_or(0);
        let end = (pos + cut).min(text.len());
        let end = (end..=text.len()).find(|p| text.is_char_boundary(*p)).unwrap_or(text.len());
        text.replace_range(pos..end, &insert);
        check(&text);
    }

    #[test]
    fn any_message_decodes_or_is_refused_without_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        task in proptest::option::of("cm\\.(launch|provision|nope)|ops\\.x|[a-z.]{0,10}"),
        id in proptest::option::of("[a-f0-9-]{0,36}"),
        json_body in proptest::option::of(r#"\[\[("[a-z0-9]{0,5}",? ?){0,3}\], ?\{("(server|recipe|hosts|kind|host|image)": ?("[a-zA-Z ]{0,8}"|[0-9]{1,3}|null|\[\]),? ?){0,5}\}(, ?\{\})?\]"#),
    ) {
        let mut headers = FieldTable::default();
        if let Some(t) = &task {
            headers.insert("task".into(), AMQPValue::LongString(LongString::from(t.as_bytes())));
        }
        if let Some(i) = &id {
            headers.insert("id".into(), AMQPValue::LongString(LongString::from(i.as_bytes())));
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers);
        let data = json_body.map(String::into_bytes).unwrap_or(body);
        if let Ok(msg) = TaskMessage::decode(&props, &data) {
            let cfg = fuzz_config();
            let _ = Job::from_message(&msg, &cfg).map(|job| job.describe());
        }
    }
}

/// A config with a command task, so messages naming it are bound to its parameters too.
fn fuzz_config() -> cm::config::Config {
    let text = format!(
        "{VALID}\n[queues.ops]\nworkers = [\"o1\"]\ntasks = [\"ops.x\"]\n[tasks.\"ops.x\"]\ncommand = [\"/bin/echo\", \"{{host}}\"]\nparams = [\"host\", \"image\"]\n"
    );
    match cm::config::Config::parse(std::path::Path::new("/etc/cm/fabfile.toml"), &text) {
        Ok(cfg) => cfg,
        Err(e) => panic!("the fuzz config is valid: {e}"),
    }
}

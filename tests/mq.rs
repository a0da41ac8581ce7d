//! `cm mq start|status|setup` against the real local broker. Never `cm mq stop`: the broker is shared.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn counts<'a>(status: &'a Value, queue: &str) -> &'a Value {
    status["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
        .unwrap_or_else(|| panic!("queue {queue} not in {status:#}"))
}

fn mq_status(stack: &Stack) -> Value {
    serde_json::from_str(&stack.ok(&["mq", "status", "--json"])).expect("mq status json")
}

#[test]
fn status_counts_the_messages_waiting_in_a_queue_without_workers() {
    let stack = Stack::new();
    stack.launch().hosts("i[1-3]").ids();
    eventually(Duration::from_secs(10), "3 ready in mq status", || {
        counts(&mq_status(&stack), &stack.launch)["ready"] == 3
    });
    let status = mq_status(&stack);
    assert_eq!(status["answers"], true, "{status:#}");
    let launch = counts(&status, &stack.launch);
    assert_eq!(launch["exists"], true);
    assert_eq!(launch["consumers"], 0, "{status:#}");
    if status["source"] == "rabbitmqctl" {
        assert_eq!(launch["unacked"], 0, "{status:#}");
    }
    // Queues nobody declared yet are reported, not created.
    let dead = counts(&status, &format!("{}.dead", stack.launch));
    assert_eq!(dead["exists"], false, "{status:#}");

    let table = stack.ok(&["mq", "status"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", stack.launch)))
        .unwrap_or_else(|| panic!("no row for {} in:\n{table}", stack.launch));
    assert_eq!(
        row.split_whitespace().nth(1),
        Some("3"),
        "ready column in:\n{table}"
    );
}

#[test]
fn status_of_an_unreachable_broker_exits_69() {
    let stack = Stack::with(Options {
        broker: dead_broker_url(),
        ..Options::default()
    });
    let ran = stack.cm(&["mq", "status", "--json"]);
    assert_eq!(ran.code, Some(69), "{ran:?}");
    let report: Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(report["answers"], false);
    assert!(ran.stderr.starts_with("cm: no broker at"), "{}", ran.stderr);
}

#[test]
fn start_when_running_is_a_no_op() {
    let stack = Stack::new();
    let out = stack.ok(&["mq", "start"]);
    assert!(out.contains("already running"), "{out}");
}

/// A vhost and a user of the test's own, deleted when dropped (declared before the stacks
/// that use them, so dropped after).
struct BrokerAccount {
    vhost: String,
    user: String,
}

impl BrokerAccount {
    fn new() -> Self {
        Self {
            vhost: unique("v"),
            user: unique("u"),
        }
    }

    /// A stack whose broker URL logs in as this account with `password` (as written in a URL).
    fn stack(&self, password: &str) -> Stack {
        Stack::with(Options {
            broker: broker_url_as(&self.user, password, &self.vhost),
            ..Options::default()
        })
    }
}

impl Drop for BrokerAccount {
    fn drop(&mut self) {
        for args in [
            ["delete_vhost", self.vhost.as_str()],
            ["delete_user", self.user.as_str()],
        ] {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(args)
                .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
                .output();
        }
    }
}

#[test]
fn setup_creates_the_vhost_and_user_of_the_url_so_workers_can_start() {
    let account = BrokerAccount::new();
    let stack = account.stack("pw%40x");
    // Before setup the broker refuses the login: exit 77 with the fix.
    stack.fails(&["queue", "start", "l1"], 77);

    for (setup, said) in [(1, "created"), (2, "exists")] {
        let out = stack.ok(&["mq", "setup"]);
        for what in [
            format!("vhost {:?}: {said}", account.vhost),
            format!("user {:?}: {said}", account.user),
        ] {
            assert!(out.contains(&what), "setup {setup}: {out}");
        }
    }
    assert!(rabbitmqctl(&["list_vhosts", "name"]).contains(&account.vhost));

    stack.start(&["l1"]);
    let listed = rabbitmqctl(&["list_queues", "-p", &account.vhost, "name", "consumers"]);
    assert!(listed.contains(&stack.launch), "{listed}");
    let status = mq_status(&stack);
    assert_eq!(counts(&status, &stack.launch)["consumers"], 1, "{status:#}");
    stack.server_stop();
}

#[test]
fn setup_refuses_a_user_whose_password_differs() {
    let account = BrokerAccount::new();
    account.stack("right").ok(&["mq", "setup"]);
    let stderr = account.stack("wrong").fails(&["mq", "setup"], 77);
    assert!(stderr.contains("change_password"), "{stderr}");
}

#[test]
fn status_without_root_counts_over_amqp() {
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIPPED: no setpriv to run cm as nobody");
        return;
    }
    let stack = Stack::new();
    stack.launch().hosts("i[1-2]").ids();
    // nobody must be able to read the config (the temp dir is root's, 0700).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let ran = stack.cm_via(
        &[
            "/usr/bin/setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["mq", "status", "--json"],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let status: Value = serde_json::from_str(&ran.stdout).expect("json");
    assert_eq!(status["source"], "amqp", "{status:#}");
    let launch = counts(&status, &stack.launch);
    assert_eq!(launch["ready"], 2, "{status:#}");
    assert_eq!(launch["unacked"], Value::Null);
    assert_eq!(
        counts(&status, &format!("{}.dead", stack.launch))["exists"],
        false
    );
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);
}

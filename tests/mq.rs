//! `cm mq start|status|setup` against the real local broker. Never `cm mq stop`: the broker is shared.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, unique, Options, Stack};

fn counts<'a>(status: &'a serde_json::Value, queue: &str) -> &'a serde_json::Value {
    status["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == queue))
        .unwrap_or_else(|| panic!("queue {queue} not in {status:#}"))
}

fn mq_status(stack: &Stack) -> serde_json::Value {
    serde_json::from_str(&stack.ok(&["mq", "status", "--json"])).expect("mq status json")
}

#[test]
fn status_counts_the_messages_waiting_in_a_queue_without_workers() {
    let stack = Stack::new();
    stack.publish(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--hosts",
        "i[1-3]",
    ]);
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
        broker: format!("amqp://guest:guest@127.0.0.1:{}/%2f", common::closed_port()),
        ..Options::default()
    });
    let out = stack.cm(&["mq", "status", "--json"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["answers"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("cm: no broker at"), "{stderr}");
}

#[test]
fn start_when_running_is_a_no_op() {
    let stack = Stack::new();
    let out = stack.ok(&["mq", "start"]);
    assert!(out.contains("already running"), "{out}");
}

/// Deletes the test's vhost and user, after the stack (declared later, dropped first) is gone.
struct BrokerAccount {
    vhost: String,
    user: String,
}

impl Drop for BrokerAccount {
    fn drop(&mut self) {
        for args in [
            vec!["delete_vhost", self.vhost.as_str()],
            vec!["delete_user", self.user.as_str()],
        ] {
            let _ = Command::new("rabbitmqctl")
                .args(&args)
                .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
                .output();
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn setup_creates_the_vhost_and_user_of_the_url_so_workers_can_start() {
    let account = BrokerAccount {
        vhost: unique("v"),
        user: unique("u"),
    };
    let url = common::broker_url_as(&account.user, "pw%40x", &account.vhost);
    let stack = Stack::with(Options {
        broker: url,
        ..Options::default()
    });
    // Before setup the broker refuses the login: exit 77 with the fix.
    let out = stack.cm(&["queue", "start", "l1"]);
    assert_eq!(out.status.code(), Some(77), "{out:?}");

    let first = stack.ok(&["mq", "setup"]);
    assert!(
        first.contains(&format!("vhost {:?}: created", account.vhost)),
        "{first}"
    );
    assert!(
        first.contains(&format!("user {:?}: created", account.user)),
        "{first}"
    );
    let again = stack.ok(&["mq", "setup"]);
    assert!(
        again.contains(&format!("vhost {:?}: exists", account.vhost)),
        "{again}"
    );
    assert!(
        again.contains(&format!("user {:?}: exists", account.user)),
        "{again}"
    );
    assert!(rabbitmqctl(&["list_vhosts", "name"]).contains(&account.vhost));

    stack.ok(&["queue", "start", "l1"]);
    let listed = rabbitmqctl(&["list_queues", "-p", &account.vhost, "name", "consumers"]);
    assert!(listed.contains(&stack.launch), "{listed}");
    let status = mq_status(&stack);
    assert_eq!(counts(&status, &stack.launch)["consumers"], 1, "{status:#}");
    stack.ok(&["server", "stop"]);
}

#[test]
fn setup_refuses_a_user_whose_password_differs() {
    let account = BrokerAccount {
        vhost: unique("v"),
        user: unique("u"),
    };
    let make = |password: &str| {
        Stack::with(Options {
            broker: common::broker_url_as(&account.user, password, &account.vhost),
            ..Options::default()
        })
    };
    make("right").ok(&["mq", "setup"]);
    let out = make("wrong").cm(&["mq", "setup"]);
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("change_password"), "{stderr}");
}

#[test]
fn status_without_root_counts_over_amqp() {
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIPPED: no setpriv to run cm as nobody");
        return;
    }
    let stack = Stack::new();
    stack.publish(&[
        "launch",
        "--server",
        "india_openstack_essex",
        "--recipe",
        "Hadoop",
        "--hosts",
        "i[1-2]",
    ]);
    // nobody must be able to read the config (the temp dir is root's, 0700).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::cm_bin())
        .arg("--config")
        .arg(&stack.config)
        .args(["mq", "status", "--json"])
        .output()
        .expect("setpriv cm");
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["source"], "amqp", "{status:#}");
    let launch = counts(&status, &stack.launch);
    assert_eq!(launch["ready"], 2, "{status:#}");
    assert_eq!(launch["unacked"], serde_json::Value::Null);
    assert_eq!(
        counts(&status, &format!("{}.dead", stack.launch))["exists"],
        false
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
}

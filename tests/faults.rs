//! Faults injected on purpose: the broker link cut, the store locked, commands racing, strangers'
//! files in the pid dir, root without a user. Each checks no job is lost and nothing foreign harmed.

mod common;

use std::time::Duration;

use cm::celery::message::TaskMessage;
use common::*;

/// A Celery-style `cm.provision` message for host h1 (no PENDING record in the store).
fn provision_message() -> TaskMessage {
    TaskMessage::new(
        "cm.provision",
        vec!["h1".into(), "ubuntu".into()],
        serde_json::Map::new(),
    )
}

/// A stack whose SQLite store gives up on a lock after 100 ms (`launch_keys` for its launcher
/// queue), with `l1` started.
fn lockable_store_stack(launch_keys: &str) -> Stack {
    let stack = Stack::with(Options {
        launch_keys: launch_keys.into(),
        extra: "[store]\nbusy_timeout_ms = 100".into(),
        ..Options::default()
    });
    stack.start(&["l1"]);
    stack
}

/// Holds the SQLite store's write lock until dropped.
fn lock_store(stack: &Stack) -> rusqlite::Connection {
    let locker = rusqlite::Connection::open(stack.store_file()).expect("open the store");
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the store");
    locker
}

/// How many of `l1`'s lines about job `id` end with `ending` (how it gave the job back).
fn give_backs(stack: &Stack, id: &str, ending: &str) -> usize {
    let gave_back = format!("job {id}: ");
    stack
        .log("l1")
        .lines()
        .filter(|l| l.contains(&gave_back) && l.ends_with(ending))
        .count()
}

#[test]
fn workers_reconnect_after_the_broker_link_is_cut_and_lose_no_job() {
    let proxy = Proxy::to_broker();
    let stack = Stack::with(Options {
        broker: proxy.url(),
        step_seconds: (0.005, 0.01),
        ..Options::default()
    });
    stack.start(&["l1", "l2"]);
    let pids = stack.worker_pids();
    let ids = stack.launch().hosts("vm[1-200]").ids();
    eventually(Duration::from_secs(20), "some jobs done", || {
        stack.successes(&["l1", "l2"]).len() >= 10
    });

    // A cut, then the broker unreachable for a while: workers must keep trying, not exit.
    proxy.set_accepting(false);
    proxy.cut();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a worker exited instead of reconnecting"
    );
    proxy.set_accepting(true);

    eventually(Duration::from_secs(60), "all 200 jobs to succeed", || {
        stack.all_succeeded(ids.len())
    });
    let logs = stack.logs(&["l1", "l2"]);
    assert!(
        logs.contains("lost the broker connection"),
        "the log does not say what happened"
    );
    assert!(logs.contains("reconnected to the broker"), "{logs}");
    assert!(stack.jobs().iter().all(|j| j["state"] != "STARTED"));
    assert_eq!(
        stack.worker_pids(),
        pids,
        "workers were replaced, not reconnected"
    );
    // Still consuming after the reconnect.
    stack.launch().timeout(20.0).ids();
}

#[test]
fn a_publisher_that_cannot_reach_the_broker_stores_nothing() {
    let stack = Stack::with(Options {
        broker: dead_broker_url(),
        ..Options::default()
    });
    let stderr = stack.launch().hosts("vm[1-3]").fails(69);
    assert!(stderr.contains("no broker at"), "{stderr}");
    assert!(
        stack.jobs().is_empty(),
        "PENDING records for jobs never published"
    );
}

#[test]
fn a_locked_store_means_no_ack_and_the_job_runs_once_it_can_be_recorded() {
    let stack = lockable_store_stack("");
    let locker = lock_store(&stack);
    // A Celery-style client's job (no PENDING record) arrives while the store is locked.
    let msg = provision_message();
    publish_message(&stack.launch, &msg);
    // The job ran (its SUCCESS line goes out before the commit) but is not recorded: the
    // give-back line names it, and it runs again once the store can take it.
    eventually(
        Duration::from_secs(10),
        "the worker to give the job back",
        || {
            stack
                .log("l1")
                .contains("not acked, returning it to the queue")
        },
    );
    assert!(
        give_backs(&stack, &msg.id, "not acked, returning it to the queue") >= 1,
        "{}",
        stack.log("l1")
    );
    // The store cannot be told of the give-back either, and the log says so.
    eventually(
        Duration::from_secs(10),
        "the untold give-back's line",
        || {
            let told = format!(
                "job {}: given back, but the status store was not told",
                msg.id
            );
            stack.log("l1").contains(&told)
        },
    );
    drop(locker);

    eventually(
        Duration::from_secs(20),
        "the job to be recorded SUCCESS",
        || stack.all_succeeded(1),
    );
    assert_eq!(queue_depth(&stack.launch), 0);
    let log = stack.log("l1");
    assert!(log.contains(&format!("{} cm.provision: RECEIVED", msg.id)));
    assert!(log
        .lines()
        .any(|l| l.contains(&msg.id) && l.ends_with("(redelivered)")));
}

/// On a quorum queue every give-back counts toward the delivery limit. One short of it, cm
/// publishes a fresh copy (no count) and acks the original instead, so that returns of cm's
/// own (here: the store locked) never dead-letter a job its worker did not die on. With
/// `delivery_limit = 2` and the store locked for several give-backs, the job still ends SUCCESS.
#[test]
fn give_backs_near_the_delivery_limit_publish_a_fresh_copy_and_never_dead_letter() {
    let stack = lockable_store_stack("queue_type = \"quorum\"\ndelivery_limit = 2");
    let locker = lock_store(&stack);
    let msg = provision_message();
    publish_message(&stack.launch, &msg);
    // Delivery 1 comes uncounted, 2 with x-delivery-count 1: one short of the limit, so its
    // give-back is the fresh copy, and so on. Without it (tried) delivery 3 has count 2, over
    // the limit: the job is dead-lettered, and this test times out waiting for its end.
    eventually(Duration::from_secs(20), "four give-backs", || {
        give_backs(&stack, &msg.id, "returning it to the queue") >= 4
    });
    drop(locker);
    eventually(Duration::from_secs(20), "the job to end", || {
        stack
            .jobs()
            .iter()
            .any(|j| j["state"] == "SUCCESS" || j["state"] == "FAILURE")
    });
    let all = stack.jobs();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["state"], "SUCCESS", "{}", all[0]);
    let log = stack.log("l1");
    assert!(!log.contains("delivery_limit"), "{log}");
    assert_eq!(queue_depth(&format!("{}.dead", stack.launch)), 0);
    assert_eq!(queue_depth(&stack.launch), 0);
    stack.server_stop();
}

/// A quorum queue's dead letters go to a quorum `.dead` (a classic one would live on one node of a
/// cluster only). A classic `.dead` left from before refuses that declare, which closes the
/// worker's publishing channel: the worker must open a new one and move the message once the
/// old queue is gone, not fail every publish of its connection from then on.
#[test]
fn a_refused_dead_letter_declare_costs_the_worker_its_channel_only_until_the_next_try() {
    let stack = Stack::with(Options {
        launch_keys: "queue_type = \"quorum\"".into(),
        ..Options::default()
    });
    let dead = format!("{}.dead", stack.launch);
    queue_depth(&dead); // declares it classic, as cm once did
    stack.start(&["l1"]);
    let poison = |body: &[u8]| publish_to(&stack.launch, body, Default::default());
    poison(b"not a job");
    eventually(Duration::from_secs(10), "the refused declare", || {
        stack.log("l1").contains("could not move a poison message")
    });
    let log = stack.log("l1");
    assert!(log.contains("inequivalent arg 'x-queue-type'"), "{log}");
    delete_queues(&[&dead]);
    eventually(Duration::from_secs(10), "the dead letter moved", || {
        existing_depth(&dead) == Some(1)
    });
    let log = stack.log("l1");
    assert!(log.contains("opening a new one"), "{log}");
    // The channel works for everything else too: a job and a second dead letter.
    poison(b"not a job either");
    stack.launch().timeout(20.0).ids();
    eventually(Duration::from_secs(10), "the second dead letter", || {
        existing_depth(&dead) == Some(2)
    });
    assert_eq!(queue_depth(&stack.launch), 0);
    // `cm dead list` declares the quorum `.dead` alike, and hands back what it showed.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&stack.ok(&["dead", "list", "--json"])).expect("json");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(existing_depth(&dead), Some(2));
    stack.server_stop();
}

#[test]
fn two_starts_at_once_leave_exactly_one_worker_per_name() {
    let stack = Stack::new();
    let (a, b) = (
        stack.background(&["queue", "start"]),
        stack.background(&["queue", "start"]),
    );
    for start in [a, b] {
        let ran = start.finish();
        assert_eq!(ran.code, Some(0), "{ran:?}");
    }
    let pids = stack.worker_pids();
    assert_eq!(pids.len(), 4, "{pids:?}");
    for name in WORKERS {
        assert!(
            pids.contains(&stack.pid_of(name)),
            "{name}'s pid file names a dead process"
        );
    }
}

#[test]
fn start_racing_stop_leaves_no_orphan() {
    let stack = Stack::new();
    stack.start(&[]);
    let (stop, start) = (
        stack.background(&["server", "stop"]),
        stack.background(&["queue", "start"]),
    );
    for racer in [stop, start] {
        let ran = racer.finish();
        assert_eq!(ran.code, Some(0), "{ran:?}");
    }
    let status = stack.status(&[]);
    let states: Vec<&str> = status
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert!(!states.contains(&"orphan"), "{states:?}");
    let running = states.iter().filter(|s| **s == "running").count();
    assert_eq!(
        stack.worker_pids().len(),
        running,
        "a worker runs without a pid file: {states:?}"
    );
}

#[test]
fn a_pid_file_symlinked_to_a_system_file_is_never_followed() {
    let stack = Stack::new();
    let target = stack.dir.path().join("passwd-copy");
    std::fs::write(&target, "root:x:0:0:root:/root:/bin/bash\n").expect("write");
    let pid_file = stack.pid_file("p1");
    std::fs::create_dir_all(pid_file.parent().expect("dir")).expect("mkdir");
    std::os::unix::fs::symlink(&target, &pid_file).expect("symlink");

    let out = stack.start(&[]);
    assert!(out.contains("ready"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "root:x:0:0:root:/root:/bin/bash\n",
        "cm wrote through a symlink"
    );
    assert!(!std::fs::symlink_metadata(&pid_file)
        .expect("pid file")
        .file_type()
        .is_symlink());
    stack.server_stop();
    assert!(target.exists());
}

#[test]
fn workers_refuse_to_run_as_root_without_a_user() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Only root can be refused; CI runs as root.
    }
    let stack = Stack::with(Options {
        allow_root: false,
        ..Options::default()
    });
    let stderr = stack.fails(&["queue", "start", "p1"], 77);
    assert!(
        stderr.contains("refusing to run workers as root") && stderr.contains("[worker] user"),
        "{stderr}"
    );
    assert!(stack.worker_pids().is_empty());
}

fn ensure_user(name: &str) -> Option<(u32, u32)> {
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let ok = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

#[test]
fn started_as_root_with_a_user_workers_run_as_that_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let (uid, _) = ensure_user("cm-test").expect("useradd cm-test");
    let stack = Stack::with(Options {
        allow_root: false,
        worker_keys: "user = \"cm-test\"".into(),
        ..Options::default()
    });
    // The temp dir is root's 0700; the worker user must be able to reach its files.
    std::fs::set_permissions(stack.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    stack.start(&[]);
    for name in WORKERS {
        let pid = stack.pid_of(name);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
        assert!(
            uid_line
                .split_whitespace()
                .skip(1)
                .all(|u| u == uid.to_string()),
            "{name}: {uid_line}"
        );
        for file in [stack.pid_file(name), stack.log_file(name)] {
            assert_eq!(
                std::fs::metadata(&file).expect("file").uid(),
                uid,
                "{file:?}"
            );
        }
    }
    // Jobs run and are recorded by the unprivileged workers.
    stack.provision("h[1-2]").timeout(20.0).ids();
    // The user itself can read the status.
    let status = stack
        .cm_via(
            &["runuser", "-u", "cm-test", "--"],
            &["queue", "status", "--json"],
        )
        .stdout_ok("queue status as cm-test");
    assert_eq!(status.matches("\"running\"").count(), 4, "{status}");
}

#[test]
fn a_full_log_loses_log_lines_not_jobs() {
    // The store is PostgreSQL here: the file size limit below would also stop an SQLite file.
    let db = PgDatabase::new();
    let stack = Stack::with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    });
    // 16 KiB per file for the workers (bash's ulimit -f counts 1 KiB blocks).
    stack
        .cm_via(
            &["bash", "-c", "ulimit -f 16 && exec \"$@\"", "bash"],
            &["queue", "start", "l1"],
        )
        .stdout_ok("queue start l1 under ulimit -f 16");
    let pid = stack.pid_of("l1");
    stack.launch().hosts("vm[1-150]").timeout(60.0).ids();
    assert!(alive(pid), "the worker died at the log size limit");
    let size = std::fs::metadata(stack.log_file("l1")).expect("log").len();
    assert!(size <= 16 * 1024, "the limit did not apply ({size} bytes)");
    assert!(
        stack.successes(&["l1"]).len() < 150,
        "the log was never full; the test proves nothing"
    );
    assert_eq!(
        stack
            .jobs()
            .iter()
            .filter(|j| j["state"] == "SUCCESS")
            .count(),
        150
    );
    drop(stack);
}

#[test]
fn a_pid_dir_writable_by_others_is_refused_and_new_dirs_are_0755() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new();
    stack.ok(&["queue", "status"]);
    stack.start(&["p1"]);
    let run = stack.dir.path().join("run");
    let mode = std::fs::metadata(&run)
        .expect("pid dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755, "pid dir created with mode {mode:o}");
    stack.server_stop();

    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let stderr = stack.fails(&["queue", "start"], 77);
    assert!(
        stderr.contains("writable by others") && stderr.contains("chmod o-w"),
        "{stderr}"
    );
    assert!(stack.worker_pids().is_empty());
}

/// Acks go out in batches, but never wait for an older job: a poison message dead-lettered
/// while a long job runs is acked at once, so a kill -9 then brings back only the long job.
#[test]
fn a_message_settled_while_an_older_job_runs_is_acked_at_once() {
    let stack = Stack::with(Options {
        step_seconds: (1.5, 1.5),
        // A queue of cm's own tasks, two jobs at a time.
        own_queue: Some(OwnQueue::commands("")),
        ..Options::default()
    });
    let pair = stack.queue().to_string();
    let dead = format!("{pair}.dead");
    stack.start(&["c1"]);
    let long = provision_message();
    let said = |state: &str| {
        stack
            .log("c1")
            .contains(&format!("{} cm.provision: {state}", long.id))
    };
    publish_message(&pair, &long);
    eventually(Duration::from_secs(10), "c1 to start the long job", || {
        said("STARTED")
    });
    // Delivery 2 while delivery 1 runs: a multiple ack for it would ack the long job too.
    publish_to(&pair, b"not json", Default::default());
    eventually(
        Duration::from_secs(10),
        "the poison message to be dead-lettered",
        || queue_depth(&dead) == 1,
    );
    // The broker holds only the long job unacked once the poison message's ack arrived.
    eventually(
        Duration::from_secs(20),
        "only the long job to be unacked",
        || unacked(&pair) == Some(1),
    );
    assert!(
        !said("SUCCESS"),
        "the long job must still be running when c1 is killed"
    );
    stack.kill9("c1");

    stack.start(&["c1"]);
    eventually(
        Duration::from_secs(30),
        "the long job to run again and succeed",
        || said("SUCCESS"),
    );
    assert_eq!(queue_depth(&pair), 0);
    assert_eq!(
        queue_depth(&dead),
        1,
        "the poison message came back after the kill: its ack was held back"
    );
    stack.server_stop();
}

/// `[broker] url` may list the nodes of a cluster: a node that does not answer is skipped, by
/// workers and publishers alike.
#[test]
fn a_broker_list_whose_first_node_is_down_still_starts_and_publishes() {
    let stack = Stack::with(Options {
        broker: format!("{};{}", dead_broker_url(), broker_url()),
        ..Options::default()
    });
    stack.start(&["l1"]);
    stack.launch().timeout(30.0).ids();
    let log = stack.log("l1");
    assert!(log.contains("trying the next node"), "{log}");
    // Status names the node the worker reached: the second of the list.
    let live = broker_addr();
    eventually(Duration::from_secs(5), "status to name the node", || {
        let status = stack.ok(&["queue", "status", "l1"]);
        status.contains("BROKER") && status.contains(&live)
    });
    let rows = stack.status(&["l1"]);
    let broker = rows[0]["broker"].as_str().unwrap_or("");
    assert!(
        broker.contains(&live) && !broker.contains("guest:guest"),
        "{rows}"
    );
    stack.server_stop();
}

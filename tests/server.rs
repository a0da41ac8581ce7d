//! `cm server start|stop|clean|status`: the workers and the detached web server together.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A stack whose `[web] bind` is a free loopback port (plus `web_extra` in that table).
fn web_stack(web_extra: &str) -> (Stack, u16) {
    let port = closed_port();
    let stack = Stack::with(Options {
        extra: format!("[web]\nbind = \"127.0.0.1:{port}\"\n{web_extra}\n"),
        ..Options::default()
    });
    (stack, port)
}

fn web_pid(stack: &Stack) -> i32 {
    read_pid(&stack.web_pid_file())
}

/// Pids of live `cm --config <ours> web --detached` processes, from /proc.
fn web_pids(stack: &Stack) -> Vec<i32> {
    pids_running(&[&stack.config.to_string_lossy(), "web", "--detached"])
}

/// `GET http://127.0.0.1:PORT/healthz`: the status and body, or None if nothing answers.
fn healthz(port: u16) -> Option<(u16, String)> {
    let resp = common::web::client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().unwrap_or_default()))
}

/// Every `*.pid` file left in the stack's pid dir.
fn pid_files(stack: &Stack) -> Vec<String> {
    std::fs::read_dir(stack.dir.path().join("run"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".pid"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn server_start_runs_workers_and_the_web_server_and_stop_ends_both() {
    let (stack, port) = web_stack("");
    let out = stack.ok(&["server", "start"]);
    assert!(
        out.contains(&format!("web      http://127.0.0.1:{port} pid ")) && out.contains("ready"),
        "{out}"
    );
    let workers = stack.worker_pids();
    assert_eq!(workers.len(), 4, "{out}");
    assert!(locked(&stack.web_pid_file()), "cm-web.pid is not locked");
    let pid = web_pid(&stack);
    assert!(alive(pid));
    assert_eq!(healthz(port), Some((200, "ok".to_string())));

    let status = stack.ok(&["server", "status"]);
    assert!(
        status.contains(&format!(
            "web      http://127.0.0.1:{port} pid {pid} running"
        )),
        "{status}"
    );
    let json: Value =
        serde_json::from_str(&stack.ok(&["server", "status", "--json"])).expect("status json");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(4), "{json}");
    assert_eq!(json["web"]["state"], "running", "{json}");
    assert_eq!(json["web"]["pid"], pid, "{json}");
    assert_eq!(json["web"]["url"], format!("http://127.0.0.1:{port}"));

    // Starting again restarts both, as `cm queue start` does for workers.
    let again = stack.ok(&["server", "start"]);
    assert!(again.contains("web      stopped"), "{again}");
    let pid2 = web_pid(&stack);
    assert_ne!(pid, pid2);
    assert!(!alive(pid), "the first web server survived the restart");
    assert_eq!(healthz(port).map(|(s, _)| s), Some(200));
    let workers = stack.worker_pids();
    assert_eq!(workers.len(), 4);

    let out = stack.server_stop();
    assert!(out.contains("web      stopped"), "{out}");
    for name in WORKERS {
        assert!(out.contains(&format!("{name:<8} stopped")), "{out}");
    }
    assert!(!alive(pid2), "the web server survived stop");
    assert!(workers.iter().all(|p| !alive(*p)), "a worker survived stop");
    assert!(web_pids(&stack).is_empty());
    assert_eq!(pid_files(&stack), Vec::<String>::new(), "pid files left");
    assert!(!stack.dir.path().join("run/cm-web.addr").exists());
    assert_eq!(healthz(port), None, "something still answers on {port}");
    let status = stack.ok(&["server", "status"]);
    assert!(status.contains("pid - stopped"), "{status}");

    let again = stack.server_stop();
    assert!(again.contains("nothing to stop"), "{again}");
}

#[test]
fn a_web_server_whose_pid_file_was_deleted_is_stopped_and_cleaned_as_an_orphan() {
    let (stack, port) = web_stack("");
    stack.ok(&["server", "start"]);
    let orphan = web_pid(&stack);
    std::fs::remove_file(stack.web_pid_file()).expect("remove cm-web.pid");
    let status = stack.ok(&["server", "status"]);
    assert!(status.contains(&format!("pid {orphan} orphan")), "{status}");
    let out = stack.server_stop();
    assert!(
        out.contains("web      stopped orphan (no pid file)"),
        "{out}"
    );
    assert!(!alive(orphan));

    stack.ok(&["server", "start"]);
    let orphan = web_pid(&stack);
    std::fs::remove_file(stack.web_pid_file()).expect("remove cm-web.pid");
    let out = stack.ok(&["server", "clean", "--logs"]);
    assert!(
        out.contains(&format!(
            "killed orphan (no pid file) web server (pid {orphan})"
        )),
        "{out}"
    );
    eventually(Duration::from_secs(5), "the orphan to die", || {
        !alive(orphan)
    });
    assert!(web_pids(&stack).is_empty());
    assert!(stack.worker_pids().is_empty());
    assert_eq!(pid_files(&stack), Vec::<String>::new(), "pid files left");
    assert!(!stack.dir.path().join("log/cm-web.log").exists());
    assert_eq!(healthz(port), None);
}

#[test]
fn a_stale_web_pid_file_is_removed_and_its_pid_not_signalled() {
    let (stack, _) = web_stack("");
    let stranger = stranger();
    let pid = stranger.pid();
    std::fs::create_dir_all(stack.dir.path().join("run")).expect("mkdir");
    std::fs::write(stack.web_pid_file(), format!("{pid}\n")).expect("write");
    let out = stack.server_stop();
    assert!(out.contains("web      stale pid file removed"), "{out}");
    assert!(!stack.web_pid_file().exists());
    std::fs::write(stack.web_pid_file(), format!("{pid}\n")).expect("write");
    let out = stack.ok(&["server", "clean"]);
    assert!(out.contains("cm-web.pid"), "{out}");
    assert!(!stack.web_pid_file().exists());
    assert!(
        alive(pid),
        "a stranger named in a stale pid file was signalled"
    );
}

#[test]
fn web_enabled_false_leaves_the_web_server_out_of_server_start() {
    let (stack, port) = web_stack("enabled = false");
    let out = stack.ok(&["server", "start"]);
    assert!(
        out.contains("web      not started: [web] enabled = false"),
        "{out}"
    );
    assert_eq!(stack.worker_pids().len(), 4);
    assert!(!stack.web_pid_file().exists());
    assert_eq!(healthz(port), None);
    let status = stack.ok(&["server", "status"]);
    assert!(
        status.contains("stopped ([web] enabled = false)"),
        "{status}"
    );
    let out = stack.server_stop();
    assert!(!out.contains("web "), "{out}");
    assert!(stack.worker_pids().is_empty());
}

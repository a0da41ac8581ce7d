//! `cm completions SHELL` and `cm man` describe cm itself: no config, no broker.

mod common;

use std::process::Command;

fn cm_without_config(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    // From an empty folder with no $CM_CONFIG: these commands must not look for fabfile.toml.
    let out = Command::new(common::cm_bin())
        .args(args)
        .current_dir(dir.path())
        .env_remove("CM_CONFIG")
        .output()
        .expect("run cm");
    assert!(out.status.success(), "cm {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn completions_for_each_shell_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = cm_without_config(&["completions", shell]);
        assert!(script.contains("queue"), "{shell}: {script}");
        assert!(script.contains("logs"), "{shell}");
    }
}

#[test]
fn man_page_lists_the_subcommands() {
    let page = cm_without_config(&["man"]);
    assert!(page.starts_with(".ie"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("queue"));
    assert!(
        page.contains(".TH cm 1"),
        "{}",
        &page[..page.len().min(400)]
    );
}

#[test]
fn man_out_writes_one_page_per_subcommand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man1");
    cm_without_config(&["man", "--out", out.to_str().expect("utf-8 path")]);
    for page in [
        "cm.1",
        "cm-queue.1",
        "cm-queue-start.1",
        "cm-mq.1",
        "cm-logs.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_default();
        assert!(!text.is_empty(), "{page} missing in {}", out.display());
    }
}

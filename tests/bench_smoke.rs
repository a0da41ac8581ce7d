//! `bench/run.sh --smoke` still runs: every figure of docs/BENCHMARKS.md gets a row.
//!
//! Uses the test build of cm and of the raw_ceiling example (tiny sizes, one repeat), the real
//! broker, PostgreSQL and the Celery venv that `make test` sets up; writes to a temp file, never
//! to docs/BENCHMARKS.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The raw_ceiling example of this build, built now: `cargo test` builds examples, but
/// `--test bench_smoke` alone does not, and an older binary may not take today's arguments.
fn raw_ceiling(cm: &Path) -> PathBuf {
    let dir = cm.parent().expect("cm has a folder");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--example", "raw_ceiling"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("run cargo build --example raw_ceiling");
    assert!(status.success(), "cargo build --example raw_ceiling failed");
    dir.join("examples").join("raw_ceiling")
}

#[test]
fn smoke_run_writes_a_row_for_every_figure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("bench/.venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: `make test` installs Celery (scripts/ensure-celery-venv.sh)",
        python.display()
    );
    let cm = Path::new(env!("CARGO_BIN_EXE_cm"));
    let raw = raw_ceiling(cm);
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("BENCHMARKS.md");

    let started = Instant::now();
    let run = Command::new("bash")
        .arg(root.join("bench/run.sh"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .current_dir(root)
        .env("CM_BIN", cm)
        .env("RAW_CEILING_BIN", &raw)
        .env("BENCH_BROKER_URL", common::broker_url())
        .env("BENCH_PG_URL", common::pg_server_url())
        .env_remove("BENCH_REPEAT")
        .env_remove("CM_CONFIG")
        .env_remove("CM_BROKER_URL")
        .output()
        .expect("run bash bench/run.sh");
    let took = started.elapsed();
    assert!(
        run.status.success(),
        "bench/run.sh --smoke failed ({}) after {took:?}:\nstdout: {}\nstderr: {}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("bench/run.sh --smoke took {took:?}");

    let report = std::fs::read_to_string(&out).expect("the smoke run wrote its report");
    // Figures 1 to 12 (11: rate limits, 12: fair dispatch); each new figure moves the bound.
    for figure in 1..=12 {
        let rows: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with(&format!("| {figure} |")))
            .collect();
        assert!(
            !rows.is_empty(),
            "no row for figure {figure} in the report:\n{report}"
        );
        // A row with a median: "| fig | what | unit | median | ..." whose median is a number.
        let measured = rows.iter().any(|row| {
            row.split('|')
                .nth(4)
                .map(|cell| cell.trim().replace(',', ""))
                .is_some_and(|cell| cell.parse::<f64>().is_ok())
        });
        assert!(
            measured,
            "figure {figure} has no measured row:\n{}",
            rows.join("\n")
        );
    }
    for section in [
        "## Targets",
        "## Where cm's throughput time goes",
        "## Exact commands",
    ] {
        assert!(report.contains(section), "no {section:?} in:\n{report}");
    }
    assert!(
        report.contains("The target is judged on PSS"),
        "the report does not say how the memory target is judged:\n{report}"
    );
}

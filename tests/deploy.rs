//! docs/deploy: the systemd units pass `systemd-analyze verify`, and the logrotate file rotates
//! and sends SIGHUP to live workers only (run for real against temp dirs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{alive, eventually, Killed};

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tool's path, or None after printing why the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: {name} is not installed here (scripts/ensure-tools.sh installs it)");
    }
    found
}

#[test]
fn systemd_units_verify_cleanly() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    for unit in ["cm-worker@.service", "cm-web.service"] {
        // verify insists the ExecStart binary exists: point it at the one cargo built.
        let text = deploy_file(unit).replace("/usr/local/bin/cm", common::cm_bin());
        std::fs::write(dir.path().join(unit), text).expect("write unit");
    }
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.path().join("cm-worker@p1.service"))
        .arg(dir.path().join("cm-web.service"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings (unknown keys, bad values) do not change the exit code; they name our files.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("cm-")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let worker = deploy_file("cm-worker@.service");
    for needed in [
        "ExecStart=/usr/local/bin/cm --config /etc/cm/fabfile.toml worker %i",
        "User=cm",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=35",
        "Restart=on-failure",
    ] {
        assert!(worker.contains(needed), "cm-worker@.service lacks {needed}");
    }
}

/// A process that records each SIGHUP it gets in `marker`; killed when dropped, even when the
/// test fails.
fn hup_recorder(marker: &Path) -> Killed {
    // Python, not `sh -c trap`: a shell cannot trap a signal that was ignored when it
    // started (as under nohup), and this recorder must work wherever the suite is run from.
    let recorder = Killed::spawn(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import signal, sys, time\n\
                 m = sys.argv[1]\n\
                 signal.signal(signal.SIGHUP, lambda *a: open(m, 'a').write('hup\\n'))\n\
                 open(m + '.ready', 'w').write('ready')\n\
                 while True: time.sleep(0.1)\n",
            )
            .arg(marker)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Until its handler is set, SIGHUP would kill it: wait for that, however busy the machine.
    let ready = marker.with_extension("hup.ready");
    eventually(
        Duration::from_secs(30),
        "the SIGHUP recorder to set its trap",
        || ready.exists(),
    );
    recorder
}

#[test]
fn logrotate_rotates_and_signals_only_live_workers() {
    let Some(logrotate) = tool("logrotate") else {
        return;
    };
    if tool("flock").is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (logs, run) = (dir.path().join("log"), dir.path().join("run"));
    std::fs::create_dir_all(&logs).expect("log dir");
    std::fs::create_dir_all(&run).expect("run dir");
    let conf = deploy_file("cm")
        .replace("/var/log/cm/", &format!("{}/", logs.display()))
        .replace("/run/cm/", &format!("{}/", run.display()))
        // No `cm` user on a test machine.
        .replace(" cm cm", " root root");
    let conf_path = dir.path().join("logrotate.conf");
    std::fs::write(&conf_path, &conf).expect("write conf");

    let debug = Command::new(&logrotate)
        .arg("-d")
        .arg("-s")
        .arg(dir.path().join("state-debug"))
        .arg(&conf_path)
        .output()
        .expect("logrotate -d");
    let said = String::from_utf8_lossy(&debug.stderr).into_owned()
        + &String::from_utf8_lossy(&debug.stdout);
    assert!(
        debug.status.success() && !said.contains("error:"),
        "logrotate -d:\n{said}"
    );

    // A live worker (pid file locked, as a worker holds it) and a stale pid file (unlocked)
    // whose pid now belongs to a stranger: only the first may get SIGHUP.
    let (live_marker, stranger_marker) =
        (dir.path().join("live.hup"), dir.path().join("stranger.hup"));
    let live = hup_recorder(&live_marker);
    let stranger = hup_recorder(&stranger_marker);
    let live_pid = run.join("celery@w1.pid");
    std::fs::write(&live_pid, format!("{}\n", live.pid())).expect("pid file");
    let lock = nix::fcntl::Flock::lock(
        std::fs::File::open(&live_pid).expect("open pid file"),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .expect("lock pid file");
    std::fs::write(run.join("celery@w2.pid"), format!("{}\n", stranger.pid())).expect("stale pid");
    std::fs::write(logs.join("celery@w1.log"), "a line\n").expect("log");

    let real = Command::new(&logrotate)
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("state"))
        .arg(&conf_path)
        .output()
        .expect("logrotate -f");
    assert!(real.status.success(), "logrotate -f: {real:?}");
    assert!(logs.join("celery@w1.log.1").is_file(), "not rotated");
    assert!(logs.join("celery@w1.log").is_file(), "no new log created");
    eventually(Duration::from_secs(5), "the live worker got SIGHUP", || {
        std::fs::read_to_string(&live_marker).is_ok_and(|s| s.contains("hup"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !stranger_marker.exists(),
        "a stale pid file's process got SIGHUP"
    );
    assert!(alive(stranger.pid()));
    drop(lock);
}

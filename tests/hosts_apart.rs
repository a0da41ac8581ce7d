//! Issue 17's faults that need the machine itself (root): hosts apart in network namespaces of
//! the test's own, one of them cut off for 30 s; and the store's disk full, on a tmpfs of the
//! test's own. `make test` runs this file alone, after the rest (`--ignored`): 75–100 s.
//!
//! Nothing of the machine's is changed for good: the broker is a RabbitMQ node of the test's
//! own listening on the veth addresses (scripts/rabbitmq-node.sh), PostgreSQL is reached through
//! a forwarder thread bound to them, and namespaces, veths and mounts are removed on drop, even
//! on failure. Their names carry the pid of the run that made them, so runs never collide: a
//! later run removes the namespaces and mounts a killed (SIGKILL) one left. That run's processes
//! live on (its workers, in their namespaces, keep its veths; its RabbitMQ node and database too,
//! as with tests/long_jobs) until someone runs `cm server clean` with its configs: the next run
//! picks a subnet they do not hold.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{free_port_pair, Node};
use common::*;

/// Why a failure to make a namespace or a mount fails the test instead of skipping it: a test
/// that passes where it cannot run proves nothing.
const NEEDS_ROOT: &str = "tests/hosts_apart needs root and a kernel that allows network \
                          namespaces and tmpfs mounts (ip netns add, mount -t tmpfs): run it as \
                          root, as make test and CI do";

fn must_be_root() {
    assert!(nix::unistd::geteuid().is_root(), "{NEEDS_ROOT}");
}

/// Runs a command of the machine's (ip, mount) and insists on success.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} ({NEEDS_ROOT})"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {} ({NEEDS_ROOT})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The same, for cleaning up: errors ignored.
fn sh_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether a name made by a run of this file (`<prefix><pid>-...`) belongs to a run that is gone
/// (a live one's, this run's own included, are left alone: its tests may run side by side).
fn left_by_a_dead_run(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .is_some_and(|pid| !alive(pid))
}

/// This run's pid and a number of its own: names no live run has. One that exists anyway was
/// left by a dead run whose pid this one got, and may be removed.
fn run_tag() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Hosts in network namespaces

const NS_PREFIX: &str = "cm-apart-";

/// One "host": a network namespace joined to the root namespace by a veth pair on a /30.
struct NetHost {
    ns: String,
    /// The root end of the veth pair (setting it down cuts the host off).
    veth: String,
    /// The root end's address: what the host reaches the broker and the store at.
    root_addr: String,
}

/// Namespaces of this run's own, removed on drop (which removes their veths too).
struct Lab {
    hosts: Vec<NetHost>,
}

impl Lab {
    fn new(count: usize) -> Self {
        must_be_root();
        // What a killed run left: its namespaces (their veths go with them).
        for line in stdout_of("ip", &["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if left_by_a_dead_run(name, NS_PREFIX) {
                sh_quiet("ip", &["netns", "del", name]);
            }
        }
        let subnet = free_subnet();
        let tag = run_tag();
        // Interface names are at most 15 characters: the pid's last 6 digits, the number.
        let short = {
            let (pid, n) = tag.split_once('-').unwrap_or((&tag, "0"));
            format!("{}x{n}", pid.parse::<u32>().unwrap_or(0) % 1_000_000)
        };
        let mut lab = Lab { hosts: Vec::new() };
        for k in 0..count {
            let ns = format!("{NS_PREFIX}{tag}-{k}");
            let veth = format!("cm{short}r{k}");
            let peer = format!("cm{short}n{k}");
            let root_addr = format!("{subnet}.{}", 4 * k + 1);
            let ns_addr = format!("{subnet}.{}", 4 * k + 2);
            sh_quiet("ip", &["netns", "del", &ns]);
            sh_quiet("ip", &["link", "del", &veth]);
            sh("ip", &["netns", "add", &ns]);
            // Pushed at once, so that drop removes it should a later step fail.
            lab.hosts.push(NetHost {
                ns: ns.clone(),
                veth: veth.clone(),
                root_addr: root_addr.clone(),
            });
            sh(
                "ip",
                &["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            );
            sh("ip", &["link", "set", &peer, "netns", &ns]);
            sh(
                "ip",
                &["addr", "add", &format!("{root_addr}/30"), "dev", &veth],
            );
            sh("ip", &["link", "set", &veth, "up"]);
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                sh("ip", &all);
            };
            in_ns(&["addr", "add", &format!("{ns_addr}/30"), "dev", &peer]);
            in_ns(&["link", "set", &peer, "up"]);
            in_ns(&["link", "set", "lo", "up"]);
        }
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            sh_quiet("ip", &["netns", "del", &h.ns]);
            sh_quiet("ip", &["link", "del", &h.veth]);
        }
    }
}

/// A `10.213.X` no address or route of this machine is in, X from this run's pid.
fn free_subnet() -> String {
    let taken = stdout_of("ip", &["-4", "-o", "addr"]) + &stdout_of("ip", &["-4", "route"]);
    let start = std::process::id() % 256;
    (0..256)
        .map(|i| format!("10.213.{}", (start + i) % 256))
        .find(|s| !taken.contains(&format!("{s}.")))
        .expect("a free 10.213.X.0/24")
}

/// `ip netns exec NS`: what runs `cm` inside network namespace `ns`, so that the workers it
/// starts live there, and reach the broker and the store only over the namespace's veth.
fn inside(ns: &str) -> [&str; 4] {
    ["ip", "netns", "exec", ns]
}

fn ok_in(ns: &str, stack: &Stack, args: &[&str]) -> String {
    stack
        .cm_via(&inside(ns), args)
        .stdout_ok(&format!("{args:?} in {ns}"))
}

/// Each worker's host, from `cm queue status --all --json` (asked of every worker over the
/// broker), as (worker count, hosts).
fn hosts_answering(ns: &str, stack: &Stack) -> (usize, BTreeSet<String>) {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&ok_in(ns, stack, &["queue", "status", "--all", "--json"]))
            .expect("status json");
    let hosts = all
        .iter()
        .filter_map(|w| w["host"].as_str().map(String::from))
        .collect();
    (all.len(), hosts)
}

/// The inode of a network namespace: a process is in `ns` when its own is the same.
fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// Every job in the store, by id, read from inside `ns`.
fn stored(ns: &str, stack: &Stack) -> BTreeMap<String, serde_json::Value> {
    let out = ok_in(ns, stack, &["jobs", "--json", "--limit", "0"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .expect("jobs json")
        .into_iter()
        .filter_map(|j| Some((j["id"].as_str()?.to_string(), j)))
        .collect()
}

/// Launches and provisions `hosts` from inside `ns`: the job ids.
fn publish_in(ns: &str, stack: &Stack, hosts: &str) -> Vec<String> {
    let mut ids = stack.launch().hosts(hosts).via(&inside(ns)).ids();
    ids.extend(stack.provision(hosts).via(&inside(ns)).ids());
    ids
}

#[test]
#[ignore = "needs root (network namespaces); make test runs it apart"]
fn hosts_apart_one_cut_off_for_30_s_lose_nothing_and_it_comes_back() {
    let began = Instant::now();
    let lab = Lab::new(2);
    let (ha, hb) = (&lab.hosts[0], &lab.hosts[1]);
    // The node listens on loopback too, for nothing but its own tools.
    let listen = [ha.root_addr.as_str(), hb.root_addr.as_str(), "127.0.0.1"];
    let port = free_port_pair(&listen);
    let node = Node::start_on(&unique("cm_apart"), port, &listen, &[]);
    let db = PgDatabase::new();
    let pg = url::Url::parse(&db.url).expect("PostgreSQL URL");
    let pg_addr = format!(
        "{}:{}",
        pg.host_str().unwrap_or("127.0.0.1"),
        pg.port().unwrap_or(5432)
    );
    // PostgreSQL listens on loopback alone: a forwarder per host, at that host's veth address.
    let pg_a = Proxy::between(&ha.root_addr, pg_addr.clone());
    let pg_b = Proxy::between(&hb.root_addr, pg_addr);
    let url_at = |base: &str, addr: &str, port: u16| {
        let mut u = url::Url::parse(base).expect("URL");
        u.set_host(Some(addr)).expect("host");
        u.set_port(Some(port)).expect("port");
        u.to_string()
    };
    let a = Stack::with(Options {
        broker: url_at(&node.url, &ha.root_addr, port),
        store_url: Some(url_at(&db.url, &ha.root_addr, pg_a.port)),
        step_seconds: (0.05, 0.05),
        node_host: Some("host-a".into()),
        // One delivery per worker at a time: what a cut can leave in flight is one job per worker.
        queue_keys: "prefetch = 1".into(),
        ..Options::default()
    });
    let b = a.second_host("host-a", "host-b");
    b.edit_config(|text| {
        let text = text
            .replace(
                &format!("@{}:{port}/", ha.root_addr),
                &format!("@{}:{port}/", hb.root_addr),
            )
            .replace(
                &format!("@{}:{}/", ha.root_addr, pg_a.port),
                &format!("@{}:{}/", hb.root_addr, pg_b.port),
            );
        assert!(!text.contains(&ha.root_addr), "host b's config: {text}");
        text
    });

    ok_in(&ha.ns, &a, &["queue", "start"]);
    ok_in(&hb.ns, &b, &["queue", "start"]);
    // Each host's workers really are in its namespace.
    for (h, stack) in [(ha, &a), (hb, &b)] {
        let ns = netns_inode(&format!("/run/netns/{}", h.ns));
        for w in WORKERS {
            let pid = stack.pid_of(w);
            assert_eq!(
                netns_inode(&format!("/proc/{pid}/ns/net")),
                ns,
                "worker {w} of {} is not in its namespace",
                h.ns
            );
        }
    }
    let both = BTreeSet::from(["host-a".to_string(), "host-b".to_string()]);
    assert_eq!(hosts_answering(&hb.ns, &b), (8, both.clone()));
    let started = began.elapsed();

    let mut published = publish_in(&hb.ns, &b, "vm[1-50]");
    // Mid-run: host a has finished jobs and is running more.
    eventually(Duration::from_secs(20), "host a to run jobs", || {
        stored(&hb.ns, &b)
            .values()
            .filter(|j| j["state"] == "SUCCESS")
            .filter(|j| j["worker"].as_str().is_some_and(|w| w.ends_with("@host-a")))
            .count()
            >= 4
    });
    sh("ip", &["link", "set", &ha.veth, "down"]);
    let cut = Instant::now();
    // Host b goes on meanwhile: the first batch ends there, host a's unacked jobs with it once
    // the broker has given up on host a (two missed heartbeats, about 20 s).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed()));
    let finals_during_cut = stored(&hb.ns, &b)
        .values()
        .filter(|j| j["state"] == "SUCCESS")
        .count();
    sh("ip", &["link", "set", &ha.veth, "up"]);
    let cut_lasted = cut.elapsed();

    // Every worker of host a saw the loss and reconnected once the link was back.
    eventually(
        Duration::from_secs(60),
        "host a's workers to reconnect",
        || {
            WORKERS
                .iter()
                .all(|w| a.log(w).contains("reconnected to the broker"))
        },
    );
    let reconnected = cut.elapsed();
    for w in WORKERS {
        assert!(
            a.log(w).contains("lost the broker connection"),
            "{w} of host a never saw the cut:\n{}",
            a.log(w)
        );
    }
    assert_eq!(hosts_answering(&hb.ns, &b), (8, both.clone()));

    // Host a takes jobs again: a second batch spreads over both hosts.
    let second = publish_in(&hb.ns, &b, "vm[51-80]");
    published.extend(second.iter().cloned());
    eventually(Duration::from_secs(60), "every job to end", || {
        let jobs = stored(&hb.ns, &b);
        published
            .iter()
            .all(|id| jobs.get(id).is_some_and(|j| j["state"] == "SUCCESS"))
    });
    let jobs = stored(&hb.ns, &b);
    let ids: BTreeSet<&String> = published.iter().collect();
    assert_eq!(ids.len(), published.len(), "an id published twice");
    assert_eq!(
        jobs.keys().collect::<BTreeSet<_>>(),
        ids,
        "the store holds other jobs than those published"
    );
    let second_hosts: BTreeSet<String> = second
        .iter()
        .filter_map(|id| jobs[id]["worker"].as_str())
        .filter_map(|w| w.split('@').nth(1).map(String::from))
        .collect();
    assert_eq!(
        second_hosts, both,
        "after the cut, jobs did not spread over both hosts"
    );
    // At least once, and no more than the cut forces: a job ran twice only if host a held it
    // when cut off (one delivery per worker), and none more than twice.
    let on_a: BTreeSet<String> = a
        .successes(&WORKERS)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for (_, id) in a
        .successes(&WORKERS)
        .into_iter()
        .chain(b.successes(&WORKERS))
    {
        *runs.entry(id).or_default() += 1;
    }
    for id in &published {
        assert!(runs.contains_key(id), "job {id} never ran by the logs");
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= WORKERS.len() && twice.iter().all(|(id, n)| **n == 2 && on_a.contains(*id)),
        "jobs ran more often than the cut explains: {twice:?}"
    );
    eprintln!(
        "hosts apart: started in {started:?}; cut {cut_lasted:?}, {finals_during_cut} of the \
         first batch final on host b meanwhile; host a reconnected {reconnected:?} after the \
         cut began; {} job(s) ran twice; whole test {:?}",
        twice.len(),
        began.elapsed()
    );
    drop(b);
    drop(a);
    drop(node);
}

// ---------------------------------------------------------------------------------------------
// The store's disk full

const FS_PREFIX: &str = "cm-full-";

/// A tmpfs of `size` on a temp dir of its own, unmounted on drop.
/// A read transaction on the store, held until dropped. A worker checkpoints its WAL within a
/// fraction of a second and then writes over the same file again, which needs no new space; a
/// reader's snapshot keeps the WAL from starting over, so the next commits must grow it, as
/// they do on a disk that filled up with jobs. The disk being full is then certain to be met.
fn hold_snapshot(store_file: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store_file).expect("open the store");
    conn.execute_batch("BEGIN").expect("begin a read");
    let _: i64 = conn
        .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
        .expect("read the store");
    conn
}

struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        must_be_root();
        // What a killed run left mounted (its source names the run's pid).
        for line in std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
        {
            let mut cols = line.split_whitespace();
            if let (Some(source), Some(target)) = (cols.next(), cols.next()) {
                if left_by_a_dead_run(source, FS_PREFIX) {
                    sh_quiet("umount", &["--lazy", target]);
                }
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let source = format!("{FS_PREFIX}{}", run_tag());
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                &source,
                &path.to_string_lossy(),
            ],
        );
        Self { _dir: dir, path }
    }

    /// Writes a filler file until the disk has no room left; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        // The last partial blocks.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        filler
    }

    fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let path = self.path.to_string_lossy().into_owned();
        let out = Command::new("umount").arg(&path).output();
        if !out.is_ok_and(|o| o.status.success()) {
            // Something still holds a file there: detach it now, it goes when they let go.
            sh_quiet("umount", &["--lazy", &path]);
        }
    }
}

fn finals(stack: &Stack) -> usize {
    stack
        .jobs()
        .iter()
        .filter(|j| j["state"] == "SUCCESS")
        .count()
}

#[test]
#[ignore = "needs root (a tmpfs mount); make test runs it apart"]
fn a_full_store_disk_acks_nothing_unstored_says_so_and_the_jobs_end_once_there_is_room() {
    let began = Instant::now();
    let disk = SmallDisk::mount("4m");
    let store_file = disk.path.join("cm.db");
    let stack = Stack::with(Options {
        store_url: Some(format!("sqlite://{}", store_file.display())),
        step_seconds: (0.2, 0.2),
        ..Options::default()
    });
    stack.start(&["l1", "l2"]);
    let pids = stack.worker_pids();
    assert_eq!(pids.len(), 2);
    let n = 20;
    let ids = stack.launch().hosts(&format!("vm[1-{n}]")).ids();
    assert_eq!(ids.len(), n);
    eventually(Duration::from_secs(10), "the first job to end", || {
        finals(&stack) >= 1
    });
    let reader = hold_snapshot(&store_file);
    let filler = disk.fill();
    assert!(
        disk.free_bytes() < 64 * 1024,
        "the disk is not full: {} bytes free",
        disk.free_bytes()
    );

    // The one-line error, in a worker's log: it names the store file and says the disk is full.
    let store_name = store_file.display().to_string();
    let said = |stack: &Stack| {
        ["l1", "l2"].iter().find_map(|w| {
            stack
                .log(w)
                .lines()
                .find(|l| l.contains("the disk is full"))
                .map(String::from)
        })
    };
    eventually(
        Duration::from_secs(20),
        "a worker to say the disk is full",
        || said(&stack).is_some(),
    );
    let line = said(&stack).unwrap_or_default();
    assert!(
        line.contains(&store_name) && line.contains("unacked") && line.contains("ERROR"),
        "{line}"
    );
    // Nothing ends while the disk is full, and nothing is acked without its state stored: every
    // job not final in the store is still in the queue, or delivered and unacked.
    let stuck = finals(&stack);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(finals(&stack), stuck, "jobs ended on a full disk");
    assert!(stuck < n, "every job ended before the disk was full");
    assert_eq!(
        u64::from(queue_depth(&stack.launch)) + unacked(&stack.launch).unwrap_or(0),
        (n - stuck) as u64,
        "a job was acked without its state stored"
    );
    // A command that must write says so in one line too, and publishes nothing.
    let stderr = stack.launch().hosts("late1").fails(75);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&store_name) && stderr.contains("the disk is full"),
        "{stderr}"
    );
    assert_eq!(stack.worker_pids(), pids, "a worker died on the full disk");

    drop(reader);
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    eventually(
        Duration::from_secs(30),
        "every job to end once there is room",
        || finals(&stack) == n,
    );
    let caught_up = freed.elapsed();
    let jobs = stack.jobs();
    assert_eq!(jobs.len(), n, "late1 was recorded though its launch failed");
    // Waited for, not given back: each job was delivered once and ran once.
    for j in &jobs {
        assert_eq!(j["deliveries"], 1, "{j}");
    }
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for (_, id) in stack.successes(&["l1", "l2"]) {
        *runs.entry(id).or_default() += 1;
    }
    assert!(
        ids.iter().all(|id| runs.get(id) == Some(&1)),
        "a job ran other than once: {runs:?}"
    );
    assert!(["l1", "l2"]
        .iter()
        .any(|w| stack.log(w).contains("has room again")));
    assert_eq!(queue_depth(&stack.launch), 0);
    assert_eq!(stack.worker_pids(), pids);
    eprintln!(
        "disk full: all {n} jobs ended {caught_up:?} after the filler went; whole test {:?}",
        began.elapsed()
    );
    stack.server_stop();
    drop(stack);
    drop(disk);
}

/// A worker stopped while its finished jobs wait for room gives up waiting at the end of its
/// grace: they go back to the queue, it exits by itself (no SIGKILL), and they end after a start
/// once there is room.
#[test]
#[ignore = "needs root (a tmpfs mount); make test runs it apart"]
fn a_stop_while_the_store_disk_is_full_returns_the_waiting_jobs_to_the_queue() {
    let disk = SmallDisk::mount("4m");
    let store_file = disk.path.join("cm.db");
    let stack = Stack::with(Options {
        store_url: Some(format!("sqlite://{}", store_file.display())),
        step_seconds: (0.2, 0.2),
        // Running jobs get half of it (3 s), then cm would SIGKILL at 6 s.
        grace_seconds: 6.0,
        ..Options::default()
    });
    stack.start(&["l1"]);
    let n = 6;
    stack.launch().hosts(&format!("vm[1-{n}]")).ids();
    eventually(Duration::from_secs(10), "the first job to end", || {
        finals(&stack) >= 1
    });
    let reader = hold_snapshot(&store_file);
    let filler = disk.fill();
    eventually(
        Duration::from_secs(20),
        "the worker to say the disk is full",
        || stack.log("l1").contains("the disk is full"),
    );
    let stuck = finals(&stack);
    let stop = Instant::now();
    stack.stop(&["l1"]);
    let took = stop.elapsed();
    let log = stack.log("l1");
    assert!(
        log.contains("l1@") && log.contains(" stopped: "),
        "the worker did not stop by itself in {took:?}:\n{log}"
    );
    assert!(
        log.contains("not acked, returning it to the queue"),
        "{log}"
    );
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    assert_eq!(
        u64::from(queue_depth(&stack.launch)),
        (n - stuck) as u64,
        "every job not stored must be back in the queue"
    );

    drop(reader);
    std::fs::remove_file(&filler).expect("remove the filler");
    stack.start(&["l1"]);
    eventually(Duration::from_secs(30), "every job to end", || {
        finals(&stack) == n
    });
    stack.server_stop();
    drop(stack);
    drop(disk);
}

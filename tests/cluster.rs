//! Faults on a real three-node RabbitMQ cluster of this file's own (scripts/rabbitmq-cluster.sh):
//! a node stopped or killed under running workers, with quorum queues and the three URLs as
//! `[broker] url`. No job may be lost, none may run twice beyond the few in flight, and workers
//! must be back on a surviving node within seconds.
//!
//! One cluster serves every test of a run (booting one costs ~25 s on two cores); each test
//! leaves it whole again, bringing back the node it took down. A watcher process stops the
//! cluster once this test process is gone, however it ended. `make test` runs this file alone,
//! after the rest (`--ignored --test-threads 1`).

mod common;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-cluster.sh")
}

/// The cluster, with its members' AMQP URLs (member 1 first).
struct Cluster {
    name: String,
    urls: Vec<String>,
}

/// Started on first use; stopped by its watcher when this process exits.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let name = unique("cmc");
        // Watch first: a start that fails half way still leaves nodes to stop. Its own process
        // group, so a Ctrl-C of the test run does not take it before it did its work.
        // Never waited for: it must outlive this process (init adopts and reaps it then).
        #[allow(clippy::zombie_processes)]
        let _watcher = Command::new("bash")
            .arg("-c")
            .arg(r#"tail --pid="$0" -f /dev/null; bash "$1" stop "$2""#)
            .arg(std::process::id().to_string())
            .arg(script())
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the cluster's watcher");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &name, &free_base_port().to_string()])
            .output()
            .expect("bash scripts/rabbitmq-cluster.sh");
        assert!(
            out.status.success(),
            "starting the cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let urls: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(urls.len(), 3, "three URLs: {urls:?}");
        eprintln!("cluster {name} up in {:?}", started.elapsed());
        Cluster { name, urls }
    })
}

/// A base port whose three ports and their distribution ports (+20000) are all free, away
/// from the machine's broker, so that runs side by side never collide.
fn free_base_port() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let fits = |b: u16| (b..b + 3).all(|p| free(p) && free(p + 20_000));
    let start = 20_000 + (std::process::id() % 20_000) as u16;
    (start..45_500)
        .chain(20_000..start)
        .step_by(3)
        .filter(|b| !(b.saturating_sub(2)..=*b + 2).contains(&5672))
        .filter(|b| !(b.saturating_sub(2)..=*b + 2).contains(&25672))
        .find(|&b| fits(b))
        .expect("three free pairs of ports")
}

impl Cluster {
    /// `[broker] url` listing the members in this order (0-based indexes).
    fn list(&self, order: [usize; 3]) -> String {
        order
            .iter()
            .map(|&i| self.urls[i].as_str())
            .collect::<Vec<_>>()
            .join(";")
    }

    fn node_name(&self, i: usize) -> String {
        format!("{}-{}@localhost", self.name, i + 1)
    }

    fn run(&self, action: &str, i: usize) {
        let out = Command::new("bash")
            .arg(script())
            .args([action, &self.name, &(i + 1).to_string()])
            .output()
            .expect("bash scripts/rabbitmq-cluster.sh");
        assert!(
            out.status.success(),
            "{action} of member {}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes member `i` down (cleanly, or by SIGKILL as a crash would); it comes back when the
    /// guard goes, whether the test passed or not, so the next test finds the cluster whole.
    fn down(&self, i: usize, how: Fault) -> Down<'_> {
        self.run(
            match how {
                Fault::Stop => "stop-node",
                Fault::Kill => "kill-node",
            },
            i,
        );
        Down { cluster: self, i }
    }

    /// Which member `url` (as `cm queue status` shows it, password hidden) is.
    fn member_of(&self, url: &str) -> Option<usize> {
        let port = url::Url::parse(url).ok()?.port()?;
        self.urls
            .iter()
            .position(|u| url::Url::parse(u).ok().and_then(|u| u.port()) == Some(port))
    }

    /// The member leading quorum queue `queue`, asked of member `via` (one that is up).
    fn leader(&self, queue: &str, via: usize) -> Option<usize> {
        let leader = queue_info(queue, "leader", Some(&self.node_name(via)))?;
        (0..3).find(|&i| self.node_name(i) == leader)
    }
}

enum Fault {
    Stop,
    Kill,
}

struct Down<'a> {
    cluster: &'a Cluster,
    i: usize,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let started = Instant::now();
        self.cluster.run("start-node", self.i);
        eprintln!(
            "member {} back in the cluster in {:?}",
            self.i + 1,
            started.elapsed()
        );
    }
}

/// The member each worker is connected to, from `cm queue status --json`.
fn members(stack: &Stack, cluster: &Cluster, workers: &[&str]) -> Vec<Option<usize>> {
    let rows = stack.status(&[]);
    workers
        .iter()
        .map(|w| {
            let row = rows.as_array()?.iter().find(|r| r["name"] == *w)?;
            (row["state"] == "running")
                .then(|| cluster.member_of(row["broker"].as_str()?))
                .flatten()
        })
        .collect()
}

/// A stack of two launcher workers (l1, l2) on a quorum queue, against the cluster's members
/// in `order`; its jobs take 30–60 ms a step, three steps each.
fn stack_on(cluster: &Cluster, order: [usize; 3]) -> Stack {
    Stack::with(Options {
        broker: cluster.list(order),
        step_seconds: (0.01, 0.02),
        launch_keys: "queue_type = \"quorum\"".into(),
        ..Options::default()
    })
}

/// `cm launch` of one job per host of `hosts`: the ids, and what cm said on stderr.
fn launch(stack: &Stack, hosts: &str) -> (Vec<String>, String) {
    let ran = stack.launch().hosts(hosts).run();
    assert_eq!(ran.code, Some(0), "cm launch {hosts}: {}", ran.stderr);
    (ran.stdout.lines().map(str::to_string).collect(), ran.stderr)
}

/// Every published job is in the store SUCCESS, and no other; each ran to its end once, but
/// for at most `in_flight` jobs (those running when the fault struck may end twice: at least
/// once). Returns how many ended twice.
fn every_job_once(stack: &Stack, published: &[String], in_flight: usize) -> usize {
    eventually(
        Duration::from_secs(90),
        "every job to be recorded SUCCESS",
        || stack.all_succeeded(published.len()),
    );
    let stored: std::collections::BTreeSet<String> = stack
        .jobs()
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    let sent: std::collections::BTreeSet<String> = published.iter().cloned().collect();
    assert_eq!(stored, sent, "the store's jobs are not the published ones");
    let mut ends: HashMap<String, usize> = HashMap::new();
    for (_, id) in stack.successes(&["l1", "l2"]) {
        *ends.entry(id).or_default() += 1;
    }
    let missing: Vec<_> = published
        .iter()
        .filter(|id| !ends.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "no SUCCESS line for {missing:?}");
    let twice: Vec<_> = ends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= in_flight,
        "{} jobs ran to their end more than once, more than the {in_flight} in flight: {twice:?}",
        twice.len()
    );
    twice.len()
}

/// The node both workers consume through is stopped while they work; a publish made while it
/// is down goes through another node. Every job ends SUCCESS, the workers are back, consuming
/// through a surviving node, within seconds, and a poison message still reaches `.dead`.
#[test]
#[ignore = "a RabbitMQ cluster of its own: make test runs this file apart"]
fn the_workers_node_stopping_mid_run_loses_no_job_and_they_move_to_another() {
    let c = cluster();
    let stack = stack_on(c, [0, 1, 2]);
    stack.start(&["l1", "l2"]);
    eventually(Duration::from_secs(5), "both workers on member 1", || {
        members(&stack, c, &["l1", "l2"]) == [Some(0), Some(0)]
    });
    let (mut published, _) = launch(&stack, "vm[1-150]");
    // A poison message first: the workers declare the queue's `.dead` through member 1.
    let dead = format!("{}.dead", stack.launch);
    publish_poison_at(&c.urls[0], &stack.launch);
    eventually(
        Duration::from_secs(30),
        "some jobs done, one dead letter",
        || {
            stack.successes(&["l1", "l2"]).len() >= 10
                && existing_depth_at(&c.urls[0], &dead) == Some(1)
        },
    );

    let down = c.down(0, Fault::Stop);
    let stopped = Instant::now();
    let (during, said) = launch(&stack, "late[1-50]");
    assert!(said.contains("trying the next node"), "{said}");
    published.extend(during);
    // Measured 0.1–0.9 s: the first reconnect attempt comes 0.5 s after the loss.
    eventually(
        Duration::from_secs(10),
        "both workers to consume through another member",
        || {
            members(&stack, c, &["l1", "l2"])
                .iter()
                .all(|m| matches!(m, Some(1) | Some(2)))
        },
    );
    eprintln!(
        "workers on another member {:?} after the stop",
        stopped.elapsed()
    );
    // `.dead` is a quorum queue like its work queue: it takes dead letters with member 1 down.
    // (Classic, it lived on member 1, and this one waited, unmoved, for its return.)
    publish_poison_at(&c.urls[1], &stack.launch);
    eventually(
        Duration::from_secs(20),
        "the second dead letter, member 1 down",
        || existing_depth_at(&c.urls[1], &dead) == Some(2),
    );
    // Concurrency 1 each: at most one job per worker was running when the node went.
    let twice = every_job_once(&stack, &published, 2);
    eprintln!(
        "{} jobs done {:?} after the stop; {twice} ended twice",
        published.len(),
        stopped.elapsed()
    );
    for w in ["l1", "l2"] {
        let log = stack.log(w);
        assert!(log.contains("lost the broker connection"), "{w}:\n{log}");
        assert!(log.contains("reconnected to the broker"), "{w}:\n{log}");
    }
    stack.server_stop();
    drop(down);
}

/// The quorum queue's leader is on a node no worker uses, and that node crashes (SIGKILL): the
/// queue gets a new leader on a surviving node and the workers, whose connections are intact,
/// go on. Every job ends SUCCESS, including those published while the queue had no leader
/// (RabbitMQ nacks them; cm sends them again on a fresh channel).
#[test]
#[ignore = "a RabbitMQ cluster of its own: make test runs this file apart"]
fn the_quorum_leaders_node_crashing_costs_no_job() {
    let c = cluster();
    // Declared through member 3, which leads it (RabbitMQ puts a quorum queue's leader on the
    // declaring client's node); the workers list member 1 first, so they use it.
    let led = stack_on(c, [2, 0, 1]);
    led.launch().ids();
    let stack = led.second_host(&c.list([2, 0, 1]), &c.list([0, 1, 2]));
    // The same store as `led`: its jobs (one so far) are this test's too.
    stack.edit_config(|text| {
        format!(
            "{text}[store]\nurl = \"sqlite://{}\"\n",
            led.store_file().display()
        )
    });
    assert_eq!(
        c.leader(&stack.launch, 0),
        Some(2),
        "member 3 leads the queue"
    );
    stack.start(&["l1", "l2"]);
    eventually(Duration::from_secs(5), "both workers on member 1", || {
        members(&stack, c, &["l1", "l2"]) == [Some(0), Some(0)]
    });
    let pids = stack.worker_pids();
    let mut published: Vec<String> = led
        .jobs()
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    let (more, _) = launch(&stack, "vm[1-150]");
    published.extend(more);
    eventually(Duration::from_secs(30), "some jobs done", || {
        stack.successes(&["l1", "l2"]).len() >= 10
    });

    // Publishing all along, from before the crash to well after: some publishes land while the
    // queue has no leader (the broker nacks those), and every one must still go through.
    let publishing = AtomicBool::new(true);
    let (down, killed, during, nacks) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let (mut ids, mut nacks) = (Vec::new(), 0);
            for round in 0.. {
                if !publishing.load(Ordering::Relaxed) {
                    break;
                }
                let (more, said) = launch(&stack, &format!("r{round}h[1-5]"));
                ids.extend(more);
                nacks += said.matches("nacked").count();
                // A publish every ~0.1 s: enough to hit the leaderless second or two, and
                // few enough jobs (~200) for the workers to finish soon.
                std::thread::sleep(Duration::from_millis(60));
            }
            (ids, nacks)
        });
        std::thread::sleep(Duration::from_millis(500));
        let down = c.down(2, Fault::Kill);
        let killed = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        publishing.store(false, Ordering::Relaxed);
        let (ids, nacks) = publisher.join().expect("the publishing thread");
        (down, killed, ids, nacks)
    });
    eprintln!(
        "{} jobs published around the crash; cm said \"nacked\" {nacks} time(s)",
        during.len()
    );
    published.extend(during);
    eventually(Duration::from_secs(30), "a new leader", || {
        matches!(c.leader(&stack.launch, 0), Some(0) | Some(1))
    });
    eprintln!("new leader {:?} after the crash", killed.elapsed());
    let twice = every_job_once(&stack, &published, 2);
    eprintln!(
        "{} jobs done {:?} after the crash; {twice} ended twice",
        published.len(),
        killed.elapsed()
    );
    assert_eq!(stack.worker_pids(), pids, "workers were replaced");
    assert_eq!(
        members(&stack, c, &["l1", "l2"]),
        [Some(0), Some(0)],
        "the workers' node never went"
    );
    stack.server_stop();
    drop(down);
}

#!/usr/bin/env python3
"""The driver behind bench/run.sh: cm against Celery 5 on the same broker, written to Markdown.

Run it through bench/run.sh (which builds cm and the raw_ceiling example and picks the Celery
venv's python, since this file imports celery). Everything lives in a fresh temp dir, on queues
and a PostgreSQL database named after this run, and is removed on exit, even on Ctrl-C.
"""

import argparse
import glob
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SIZES = {
    # cm jobs per throughput run, Celery tasks per run, raw-ceiling messages, workers per queue
    # (4 queues) for the scale figure, jobs in the store at each step of the first-page figure
    # (the store grows from one to the next), one-job commands and Python round trips per run of
    # the latency figure, /bin/true jobs per command-jobs run.
    "full": dict(cm_jobs=20000, celery_jobs=3000, raw_jobs=30000, scale=[1, 2, 4, 10],
                 db_jobs=[100000, 1000000], one_job=30, round_trips=300, command_jobs=2000),
    "smoke": dict(cm_jobs=300, celery_jobs=200, raw_jobs=2000, scale=[1, 2], db_jobs=[1000, 2000],
                  one_job=3, round_trips=10, command_jobs=40),
}
# The figures, in the order a run measures them (`--only` picks some).
FIGURES = ("lifecycle", "throughput", "scale", "first_page", "latency", "command_jobs")
SERVER, RECIPE = "india_openstack_essex", "Hadoop"
LAUNCH_KWARGS = {"server": SERVER, "recipe": RECIPE, "kind": "vm", "hosts": "x", "user": None}
TICK = os.sysconf("SC_CLK_TCK")
# Unacked messages per worker in the throughput figures, for cm (`prefetch`) and Celery
# (`worker_prefetch_multiplier`, -c 1) alike. No-op jobs finish in microseconds; the default 4
# makes each worker wait for its acks to reach the broker before it is sent more. One row keeps
# cm's default for comparison.
TPUT_PREFETCH = 256


def die(msg):
    raise SystemExit(f"bench: {msg}")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------- /proc ----------


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_kb(pid):
    """Pss and Anonymous (kB) from /proc/PID/smaps_rollup."""
    out = {"Pss": 0, "Anonymous": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def children(pid):
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid):
    pids = [pid]
    for c in children(pid):
        pids += tree(c)
    return pids


def tree_rss_kb(pid):
    return sum(rss_kb(p) for p in tree(pid))


def memory_mib(pid):
    """RSS, PSS and anonymous memory of a process and its children, in MiB."""
    pids = tree(pid)
    sm = [smaps_kb(p) for p in pids]
    return {"rss": sum(rss_kb(p) for p in pids) / 1024, "pss": sum(x["Pss"] for x in sm) / 1024,
            "anon": sum(x["Anonymous"] for x in sm) / 1024}


def cpu_ticks(pid):
    """utime + stime of a live process, in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def pids_named(comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def machine_busy_ticks():
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts[:8]) - idle


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


class CpuMeter:
    """CPU seconds spent by groups of processes between start() and stop()."""

    def __init__(self, groups):
        self.groups = groups  # name -> callable returning pids

    def start(self):
        self.t0 = time.perf_counter()
        self.busy0 = machine_busy_ticks()
        self.before = {}
        for name, fn in self.groups.items():
            self.before[name] = {p: cpu_ticks(p) for p in fn()}
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self, extra=None):
        wall = time.perf_counter() - self.t0
        out = {}
        for name, fn in self.groups.items():
            ticks = 0
            for p in set(fn()) | set(self.before[name]):
                now = cpu_ticks(p)
                if now:
                    ticks += now - self.before[name].get(p, 0)
            out[name] = ticks / TICK
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["bench driver"] = (ru.ru_utime + ru.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime)
        for k, v in (extra or {}).items():
            out[k] = v
        busy = (machine_busy_ticks() - self.busy0) / TICK
        out["other (whole machine minus the above)"] = max(0.0, busy - sum(out.values()))
        return {"wall": wall, "busy": busy, "cpu": out}


# ---------- the benchmark ----------


class CmStack:
    def __init__(self, path, workers):
        self.path = path
        self.dir = os.path.dirname(path)
        self.workers = workers

    def pids(self):
        out = []
        for w in self.workers:
            try:
                with open(os.path.join(self.dir, "run", f"celery@{w}.pid")) as f:
                    pid = int(f.read().strip())
                if alive(pid):
                    out.append(pid)
            except (OSError, ValueError):
                pass
        return out


class Bench:
    def __init__(self, args):
        self.a = args
        self.sizes = dict(SIZES["smoke" if args.smoke else "full"])
        for key in ("cm_jobs", "celery_jobs", "raw_jobs"):
            env = os.environ.get("BENCH_" + key.upper())
            if env:
                self.sizes[key] = int(env)
        env = os.environ.get("BENCH_DB_JOBS")
        if env:
            self.sizes["db_jobs"] = sorted(int(n) for n in env.split(","))
        self.repeat = args.repeat
        self.run = f"cmb{os.getpid()}x{uuid.uuid4().hex[:6]}"
        self.tmp = tempfile.mkdtemp(prefix=f"cm-bench-{self.run}-")
        self.host = self.run  # the @host part of the Celery node names: unique to this run
        self.celery = os.path.join(os.path.dirname(sys.executable), "celery")
        self.stacks = []
        self.celery_dirs = []
        self.queues = []
        self.pg_dbs = []
        self.started_procs = []
        self.results = {}  # key -> list of floats
        self.notes = {"cmd.pueue": "not measured: pueue is not installed (`cargo install pueue`)"}  # key -> text
        self.commands = {}  # label -> command line (first time it ran)
        self.profiles = {}  # key -> list of CpuMeter results
        self.phases = {}  # key -> list of (publish_s, total_s, last_final_s)
        self.perf = None
        # (updates of jobs, of them HOT, jobs' indexes) per PostgreSQL throughput run.
        self.pg_stats = []
        self.drain = {}
        self.web = False
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
        self.celery_broker = args.broker.replace("%2f", "%2F")
        self.env["BENCH_BROKER"] = self.celery_broker
        self.env["PYTHONPATH"] = HERE + os.pathsep + self.env.get("PYTHONPATH", "")
        os.environ["BENCH_BROKER"] = self.celery_broker
        sys.path.insert(0, HERE)
        from celery_app import app  # noqa: E402 (needs BENCH_BROKER first)

        self.app = app
        self.t_begin = time.perf_counter()

    # ----- helpers -----

    def log(self, msg):
        print(f"[{time.perf_counter() - self.t_begin:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def add(self, key, value):
        self.results.setdefault(key, []).append(value)

    def shown(self, argv):
        text = shlex.join(str(a) for a in argv)
        text = text.replace(self.tmp, "$TMP").replace(self.run, "$RUN")
        text = text.replace(self.a.cm, "cm").replace(self.celery, "celery")
        return text.replace(self.a.raw, "target/release/examples/raw_ceiling")

    def add_memory(self, who, pid):
        for k, v in memory_mib(pid).items():
            self.add(f"{k}.{who}", v)

    def note_cmd(self, label, argv):
        self.commands.setdefault(label, self.shown(argv))

    def sh(self, argv, label=None, env=None, check=True, timeout=900):
        if label:
            self.note_cmd(label, argv)
        t0 = time.perf_counter()
        p = subprocess.run(
            [str(a) for a in argv], env=env or self.env, capture_output=True, text=True, timeout=timeout
        )
        dt = time.perf_counter() - t0
        if check and p.returncode != 0:
            die(f"{self.shown(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return dt, p

    def cm(self, stack, *args, label=None, check=True):
        return self.sh([self.a.cm, "--config", stack.path, *args], label=label, check=check)

    def stack(self, name, queues, store_url=None, prefetch=None, events=False, concurrency=1):
        """A temp dir with its own fabfile.toml. queues: [(queue, [workers], [tasks])]."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        store = store_url or "sqlite://" + os.path.join(d, "cm.db")
        parts = [
            f'[broker]\nurl = "{self.a.broker}"',
            '[paths]\npid_dir = "run"\nlog_dir = "log"',
            "[worker]\nstop_grace_seconds = 30\nstart_timeout_seconds = 120\nallow_root = true"
            + ("\nsend_events = true" if events else ""),
        ]
        workers = []
        for q, ws, tasks in queues:
            self.queues += [q, q + ".dead"]
            workers += ws
            parts.append(f"[queues.{q}]\nworkers = {json.dumps(ws)}\ntasks = {json.dumps(tasks)}\nconcurrency = {concurrency}"
                         + (f"\nprefetch = {prefetch}" if prefetch else ""))
        # A task that is not cm's own needs a definition; these queues only start and stop.
        for name in sorted({t for _, _, tasks in queues for t in tasks if not t.startswith("cm.")}):
            parts.append(f'[tasks."{name}"]\ncommand = ["/bin/true"]')
        parts.append("[simulation]\nstep_seconds = [0, 0]")
        parts.append(f'[store]\nurl = "{store}"')
        path = os.path.join(d, "fabfile.toml")
        with open(path, "w") as f:
            f.write("\n".join(parts) + "\n")
        s = CmStack(path, workers)
        self.stacks.append(s)
        return s

    def celery_multi(self, action, nodes, d, opts, label=None, env=None):
        argv = [self.celery, "-A", "celery_app", "multi", action, *nodes, *opts,
                f"--pidfile={d}/%n.pid", f"--logfile={d}/%n.log"]
        return self.sh(argv, label=label, env=env)

    def celery_dir(self, name):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        self.celery_dirs.append(d)
        return d

    def celery_pids(self, d):
        out = []
        for path in glob.glob(os.path.join(d, "*.pid")):
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
                if alive(pid):
                    out.append(pid)
            except (OSError, ValueError):
                pass
        return out

    def kill_celery(self, d):
        """SIGKILL the Celery workers (and their pool children) whose pid files are in `d`."""
        pids = [p for w in self.celery_pids(d) for p in reversed(tree(w))]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.perf_counter() + 10
        while any(alive(p) for p in pids) and time.perf_counter() < deadline:
            time.sleep(0.02)
        for path in glob.glob(os.path.join(d, "*.pid")):
            os.remove(path)

    def wait_pings(self, nodes, deadline_s=120):
        seen = set()
        deadline = time.perf_counter() + deadline_s
        while not seen >= set(nodes):
            if time.perf_counter() > deadline:
                die(f"Celery nodes {sorted(set(nodes) - seen)} did not answer ping in {deadline_s}s")
            missing = sorted(set(nodes) - seen)
            for reply in self.app.control.ping(destination=missing, timeout=0.1, limit=len(missing)) or []:
                seen.update(reply.keys())

    def celery_start(self, nodes, d, opts, label=None, env=None):
        """`celery multi start` until every node answers a ping; returns seconds."""
        t0 = time.perf_counter()
        self.celery_multi("start", nodes, d, opts, label=label, env=env)
        self.wait_pings(nodes)
        return time.perf_counter() - t0

    def psql(self, sql, db="postgres", check=True):
        argv = ["psql", f"{self.a.pg}/{db}", "-v", "ON_ERROR_STOP=1", "-Atqc", sql]
        return self.sh(argv, check=check)[1]

    def pg_ok(self):
        if not shutil.which("psql"):
            return "psql not installed"
        p = self.psql("SELECT 1", check=False)
        return None if p.returncode == 0 else f"PostgreSQL at {self.a.pg} unreachable: {p.stderr.strip()}"

    def pg_create(self, tag):
        name = f"cmbench_{self.run}_{tag}".lower()
        self.psql(f"CREATE DATABASE {name}")
        self.pg_dbs.append(name)
        return name, f"{self.a.pg}/{name}"

    def pg_drop(self, name):
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
        if name in self.pg_dbs:
            self.pg_dbs.remove(name)

    def broker_pids(self):
        return pids_named("beam.smp")

    def settle(self, window=0.5, quiet_ticks=2, limit=20):
        """Waits (untimed) until RabbitMQ is idle: at most `quiet_ticks` of CPU over `window` s, or
        `limit` s. After a run of tens of thousands of persistent messages the broker cleans up its
        message store for seconds; that work must not be billed to the next run, cm's or Celery's
        (measured: cm's end-to-end rate right after the raw-ceiling run was 20% lower)."""
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            pids = self.broker_pids()
            before = sum(cpu_ticks(p) or 0 for p in pids)
            time.sleep(window)
            if sum(cpu_ticks(p) or 0 for p in pids) - before <= quiet_ticks:
                return
        self.log(f"RabbitMQ still busy after {limit} s; measuring anyway")

    # ----- figures 1-3: start, stop, memory -----

    def lifecycle(self):
        run = self.run
        cm = self.stack("lifecycle", [(f"{run}_prov", ["p1", "p2"], ["cm.provision"]),
                                      (f"{run}_launch", ["l1", "l2"], ["cm.launch"])])
        self.queues += [f"{run}_cprov", f"{run}_claunch", f"{run}_csolo"]
        nodes = [f"{n}@{self.host}" for n in ("p1", "p2", "l1", "l2")]
        opts = ["-c", "1", "-Q:1,2", f"{run}_cprov", "-Q:3,4", f"{run}_claunch"]
        solo_nodes = [f"s1@{self.host}"]
        solo_opts = ["-P", "solo", "-Q", f"{run}_csolo"]
        d = self.celery_dir("celery-lifecycle")
        sd = self.celery_dir("celery-solo")
        # Untimed warm-up: the first start creates cm's SQLite store; the page cache gets Python's
        # modules and cm's binary; neither is what an operator waits for on a running system.
        self.log("warm-up start/stop (cm, Celery)")
        self.cm(cm, "queue", "start")
        self.cm(cm, "server", "stop")
        if not self.a.smoke:
            self.celery_start(nodes, d, opts)
            self.celery_multi("stopwait", nodes, d, opts)
        for i in range(self.repeat):
            self.log(f"start/stop/memory, run {i + 1}/{self.repeat}")
            dt, _ = self.cm(cm, "queue", "start", label="1 cm")
            self.add("start.cm", dt)
            for pid in cm.pids():
                self.add_memory("cm", pid)
            if len(cm.pids()) != 4:
                die(f"expected 4 cm workers, found {cm.pids()}")
            dt, _ = self.cm(cm, "server", "stop", label="2 cm")
            self.add("stop.cm", dt)

            dt = self.celery_start(nodes, d, opts, label="1 celery")
            self.add("start.celery", dt)
            pids = self.celery_pids(d)
            if len(pids) != 4:
                die(f"expected 4 Celery workers, found {pids}")
            for pid in pids:
                self.add_memory("celery_prefork", pid)
            dt, _ = self.celery_multi("stopwait", nodes, d, opts, label="2 celery")
            self.add("stop.celery", dt)

            self.celery_start(solo_nodes, sd, solo_opts, label="3 celery solo")
            for pid in self.celery_pids(sd):
                self.add_memory("celery_solo", pid)
            self.kill_celery(sd)  # its stop is not a figure; stopwait would cost ~10 s a run

    # ----- figure 4: throughput -----

    def cm_throughput(self, i, kind, store_url=None, prefetch=TPUT_PREFETCH, events=False):
        q = f"{self.run}_t{kind}{i}"
        s = self.stack(f"tput-{kind}-{i}", [(q, ["w1", "w2", "w3", "w4"], ["cm.launch"])], store_url,
                       prefetch=prefetch, events=events)
        self.cm(s, "queue", "start", label=f"4 cm {kind} (workers)")
        n = self.sizes["cm_jobs"]
        argv = self.launch_argv(s, n, wait=True)
        self.note_cmd(f"4 cm {kind}", argv)
        meter = CpuMeter({"cm workers": s.pids, "RabbitMQ (beam.smp)": self.broker_pids,
                          "PostgreSQL": lambda: pids_named("postgres")})
        err_path = os.path.join(s.dir, "launch.err")
        self.settle()
        meter.start()
        wall0 = time.time()
        t0 = time.perf_counter()
        with open(err_path, "w") as err:
            p = subprocess.Popen([str(a) for a in argv], env=self.env, stdout=subprocess.PIPE, stderr=err)
            first = p.stdout.readline()
            t_pub = time.perf_counter() - t0
            rest = p.stdout.read()
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
        total = time.perf_counter() - t0
        prof = meter.stop({"cm launch (producer)": ru.ru_utime + ru.ru_stime})
        ids = (1 if first else 0) + rest.count(b"\n")
        if p.returncode != 0 or ids != n:
            with open(err_path) as f:
                die(f"cm launch ({kind}) exited {p.returncode} with {ids} ids:\n{f.read()[-2000:]}")
        last = self.store_query(s, store_url, "SELECT MAX(finished_ms) FROM jobs")
        rss = [rss_kb(pid) / 1024 for pid in s.pids()]
        self.cm(s, "server", "stop")
        self.add(f"tput.cm_{kind}", n / total)
        self.add(f"rss_load.cm_{kind}", median(rss))
        self.phases.setdefault(kind, []).append((t_pub, total, (last - wall0 * 1000) / 1000 if last else None))
        self.profiles.setdefault(kind, []).append(prof)

    def launch_argv(self, s, n, wait):
        argv = [self.a.cm, "--config", s.path, "launch", "--server", SERVER, "--recipe", RECIPE,
                "--hosts", "x", "--count", str(n)]
        return argv + ["--wait", "--timeout", "900"] if wait else argv

    def store_query(self, s, store_url, sql):
        """One integer from the stack's store (None if it cannot be read)."""
        try:
            if store_url:
                out = self.psql(sql, db=store_url.rsplit("/", 1)[1]).stdout.strip()
            else:
                with sqlite3.connect(os.path.join(s.dir, "cm.db"), timeout=10) as db:
                    out = db.execute(sql).fetchone()[0]
            return int(out) if out is not None and out != "" else None
        except Exception:  # a profile aid only
            return None

    def celery_pool(self):
        """The 4 Celery workers of the throughput figure, started once (untimed) and reused."""
        q = f"{self.run}_tcelery"
        self.queues.append(q)
        d = self.celery_dir("celery-tput")
        done = os.path.join(d, "done")
        open(done, "w").close()
        env = dict(self.env, BENCH_DONE_FILE=done, BENCH_PREFETCH_MULTIPLIER=str(TPUT_PREFETCH))
        nodes = [f"t{k}@{self.host}" for k in range(1, 5)]
        opts = ["-c", "1", "-Q", q]
        self.celery_start(nodes, d, opts, label="4 celery (workers)", env=env)
        return dict(q=q, d=d, done=done, env=env, nodes=nodes, opts=opts)

    def celery_send(self, q, n):
        with self.app.producer_or_acquire() as producer:
            for _ in range(n):
                self.app.send_task("cm.launch", kwargs=LAUNCH_KWARGS, queue=q, producer=producer)

    def celery_wait_done(self, done, n, t0):
        while os.path.getsize(done) < n:
            if time.perf_counter() > t0 + 900:
                die(f"Celery finished only {os.path.getsize(done)} of {n} tasks in 900 s")
            time.sleep(0.002)

    def celery_throughput(self, pool):
        n = self.sizes["celery_jobs"]
        self.commands.setdefault(
            "4 celery", f"python: app.send_task('cm.launch', kwargs={LAUNCH_KWARGS}, queue=Q) x N "
            f"(N = {n}), then wait until the workers' done-file has N bytes")
        os.truncate(pool["done"], 0)
        pids = lambda: [p for w in self.celery_pids(pool["d"]) for p in tree(w)]  # noqa: E731
        meter = CpuMeter({"Celery workers": pids, "RabbitMQ (beam.smp)": self.broker_pids})
        self.settle()
        meter.start()
        t0 = time.perf_counter()
        self.celery_send(pool["q"], n)
        t_pub = time.perf_counter() - t0
        self.celery_wait_done(pool["done"], n, t0)
        total = time.perf_counter() - t0
        self.profiles.setdefault("celery", []).append(meter.stop())
        self.add("tput.celery", n / total)
        self.phases.setdefault("celery", []).append((t_pub, total, None))

    def raw_ceiling(self, i, celery=False):
        """celery: the same pattern with cm's own messages (Celery protocol headers and properties)."""
        kind = "raw_celery" if celery else "raw"
        q = f"{self.run}_{kind}{i}"
        self.queues.append(q)
        n = self.sizes["raw_jobs"]
        meter = CpuMeter({"raw_ceiling": lambda: [], "RabbitMQ (beam.smp)": self.broker_pids})
        self.settle()
        meter.start()
        flag = ["--celery"] if celery else []
        _, p = self.sh([self.a.raw, *flag, n, q, self.a.broker], label=f"4 {kind}")
        prof = meter.stop()
        r = json.loads(p.stdout.strip().splitlines()[-1])
        self.add(f"tput.{kind}", r["rate"])
        self.phases.setdefault(kind, []).append((r["publish_seconds"], r["seconds"], None))
        self.profiles.setdefault(kind, []).append(prof)

    def throughput(self):
        pg_missing = self.pg_ok()
        if pg_missing:
            self.notes["tput.cm_pg"] = f"skipped: {pg_missing}"
        pool = self.celery_pool()
        for i in range(self.repeat):
            self.log(f"throughput, run {i + 1}/{self.repeat}: cm/SQLite {self.sizes['cm_jobs']} jobs")
            self.cm_throughput(i, "sqlite")
            self.log(f"throughput, run {i + 1}/{self.repeat}: cm/SQLite, Celery task events on")
            self.cm_throughput(i, "sqlite_ev", events=True)
            self.log(f"throughput, run {i + 1}/{self.repeat}: cm/SQLite, default prefetch")
            self.cm_throughput(i, "sqlite_p4", prefetch=None)
            if not pg_missing:
                self.log(f"throughput, run {i + 1}/{self.repeat}: cm/PostgreSQL {self.sizes['cm_jobs']} jobs")
                name, url = self.pg_create(f"t{i}")
                self.cm_throughput(i, "pg", url)
                self.pg_updates(name)
                self.pg_drop(name)
            self.log(f"throughput, run {i + 1}/{self.repeat}: Celery {self.sizes['celery_jobs']} tasks")
            self.celery_throughput(pool)
            self.log(f"throughput, run {i + 1}/{self.repeat}: raw ceiling {self.sizes['raw_jobs']} messages")
            self.raw_ceiling(i)
            self.log(f"throughput, run {i + 1}/{self.repeat}: raw ceiling with cm's messages")
            self.raw_ceiling(i, celery=True)
        self.add("rss_load.celery_prefork", median([tree_rss_kb(p) / 1024 for p in self.celery_pids(pool["d"])]))
        self.e2e_profile()
        self.drain_profile(pool, pg_missing)
        self.kill_celery(pool["d"])

    # ----- where the time goes: producer alone, workers alone -----

    def drain_profile(self, pool, pg_missing):
        """Publish with no worker running (the producer alone), then time draining the queue with 1 and
        with 4 workers (the workers and the store alone)."""
        m = max(100, self.sizes["cm_jobs"] // 2)
        self.drain = {"jobs": m}
        kinds = [("sqlite", None)]
        pg_name = None
        if not pg_missing:
            pg_name, url = self.pg_create("drain")
            kinds.append(("pg", url))
        four = ["w1", "w2", "w3", "w4"]
        for kind, url in kinds:
            s = self.stack(f"drain-{kind}", [(f"{self.run}_d{kind}", four, ["cm.launch"])], url,
                           prefetch=TPUT_PREFETCH)
            for workers in (["w1"], four):
                w = len(workers)
                self.log(f"profile: cm/{kind}: publish {m} jobs with no worker, drain with {w}")
                self.settle()
                dt, _ = self.sh(self.launch_argv(s, m, wait=False), label="profile: publish only")
                self.drain[f"publish.{kind}.{w}"] = m / dt
                done = "SELECT COUNT(*) FROM jobs WHERE state = 'SUCCESS'"
                target = (self.store_query(s, url, done) or 0) + m
                meter = CpuMeter({"cm workers": s.pids, "RabbitMQ (beam.smp)": self.broker_pids,
                                  "PostgreSQL": lambda: pids_named("postgres")})
                self.settle()
                meter.start()
                t0 = time.perf_counter()
                self.cm(s, "queue", "start", *workers, label=f"profile: drain with {w}")
                while (self.store_query(s, url, done) or 0) < target:
                    if time.perf_counter() > t0 + 900:
                        die(f"cm/{kind} workers did not drain {m} jobs in 900 s")
                    time.sleep(0.02)
                dt = time.perf_counter() - t0
                self.drain[f"cpu.{kind}.{w}"] = meter.stop()
                self.drain[f"drain.{kind}.{w}"] = m / dt
                self.cm(s, "server", "stop")
        if pg_name:
            self.pg_drop(pg_name)
        # Celery, its workers alone: stop consuming, publish, consume again.
        n = self.sizes["celery_jobs"]
        self.log(f"profile: Celery: publish {n} tasks with consumers cancelled, then drain")
        self.app.control.cancel_consumer(pool["q"], destination=pool["nodes"], reply=True, timeout=5)
        os.truncate(pool["done"], 0)
        t0 = time.perf_counter()
        self.celery_send(pool["q"], n)
        self.drain["publish.celery"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        self.app.control.add_consumer(pool["q"], destination=pool["nodes"], reply=True, timeout=5)
        self.celery_wait_done(pool["done"], n, t0)
        self.drain["drain.celery"] = n / (time.perf_counter() - t0)

    def pg_updates(self, db):
        """How the run's updates of `jobs` went (its workers are stopped, so their statistics are
        in): updates, how many were HOT (no new index entries), and the table's indexes."""
        p = self.psql("SELECT n_tup_upd, n_tup_hot_upd, (SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'jobs') "
                      "FROM pg_stat_user_tables WHERE relname = 'jobs'", db=db, check=False)
        try:
            upd, hot, indexes = (int(x) for x in p.stdout.strip().split("|"))
        except ValueError:
            return
        self.pg_stats.append((upd, hot, indexes))

    def e2e_profile(self):
        """Untimed: one more end-to-end SQLite run of figure 4 under `perf record` with DWARF call
        graphs on the 4 workers: what share of their CPU each part of the work takes, inclusive."""
        if self.a.smoke or not shutil.which("perf"):
            return
        n = self.sizes["cm_jobs"]
        self.log(f"profile: cm/SQLite end to end, {n} jobs, workers under perf record")
        s = self.stack("perf-sqlite", [(f"{self.run}_psqlite", ["w1", "w2", "w3", "w4"], ["cm.launch"])],
                       prefetch=TPUT_PREFETCH)
        self.cm(s, "queue", "start", label="profile: perf (workers)")
        data = os.path.join(self.tmp, "perf.data")
        # 16 KiB of stack per sample unwinds through tokio and SQLite; 499 Hz keeps the file small.
        argv = ["perf", "record", "--call-graph", "dwarf,16384", "-F", "499", "-o", data,
                "-p", ",".join(str(p) for p in s.pids())]
        self.note_cmd("profile: perf", argv)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.started_procs.append(proc)
        # perf writes its file's header after opening its events on the workers' threads: no job before.
        deadline = time.perf_counter() + 30
        while not (os.path.exists(data) and os.path.getsize(data) > 0):
            if proc.poll() is not None or time.perf_counter() > deadline:
                self.perf = f"perf record did not start (exit {proc.poll()})"
                self.cm(s, "server", "stop")
                return
            time.sleep(0.05)
        self.settle()
        self.sh(self.launch_argv(s, n, wait=True), label="profile: perf (launch)")
        self.perf = self.perf_stop(proc, data)
        self.cm(s, "server", "stop")

    # What the inclusive profile is cut into: (key, what, frame it is under).
    PERF_PARTS = [
        ("commit", "the store's commits (the group commit's SQLite transactions)", "cm::store::writer::run"),
        ("wal", "of which appending pages to the WAL", "pagerWalFrames"),
        ("reread", "of which reading pages back (another worker's commit changed the file)", "readDbPage"),
        ("jobs", "the jobs' own handling (decode, run, log lines, events, ack)", "cm::worker::delivery::handle"),
        ("park", "the runtime parking and waking (epoll, timers, the job log's write)",
         "current_thread::Context::park"),
    ]

    def perf_stop(self, proc, data):
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"perf record did not stop: {e}"

        def report(*args):
            p = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", *args],
                               capture_output=True, text=True)
            out = []
            for line in p.stdout.splitlines():
                m = re.match(r"\s*([\d.]+)%\s+(?:([\d.]+)%\s+)?(.*)$", line)
                if m:
                    out.append((float(m.group(1)), " ".join(m.group(3).split())))
            return out

        threads = report("--no-children", "--sort", "comm")
        if not threads:
            return "perf report gave nothing (perf_event_paranoid?)"
        total = sum(x for x, _ in threads) or 1.0
        rows = report("--children", "--sort", "comm,sym")
        main = os.path.basename(self.a.cm)[:15]  # the runtime thread keeps the binary's name
        # A frame can appear more than once (closures, inlined copies): its largest share counts.
        parts = {key: max([x for x, name in rows if name.startswith(main + " ") and frame in name] or [0.0]) / total
                 for key, _, frame in self.PERF_PARTS}
        return {"threads": [(x / total, name) for x, name in threads if x / total >= 0.005],
                "parts": parts, "main": main}

    # ----- figure 5: scale -----

    def scale(self):
        letters = "abcd"
        stacks = {}
        for k in self.sizes["scale"]:
            stacks[k] = self.stack(f"scale-{k}", [
                (f"{self.run}_s{k}{c}", [f"{c}{j}" for j in range(1, k + 1)], [f"bench.{c}"]) for c in letters])
            self.cm(stacks[k], "queue", "start")  # untimed warm-up: creates the store
            self.cm(stacks[k], "server", "stop")
        for i in range(self.repeat):
            for k, s in stacks.items():
                w = 4 * k
                self.log(f"scale, run {i + 1}/{self.repeat}: {w} workers")
                dt, _ = self.cm(s, "queue", "start", label=f"5 cm {w}")
                self.add(f"scale.start.{w}", dt)
                pids = s.pids()
                if len(pids) != w:
                    die(f"expected {w} workers, found {len(pids)}")
                total = sum(rss_kb(p) for p in pids) / 1024
                self.add(f"scale.rss_total.{w}", total)
                self.add(f"scale.rss_each.{w}", total / w)
                dt, _ = self.cm(s, "server", "stop", label=f"5 cm {w} stop")
                self.add(f"scale.stop.{w}", dt)

    # ----- figure 6: first page with many jobs -----

    # Rows as a worker leaves them: mostly SUCCESS, some FAILURE, a few of every other state, on 4
    # workers, 10 ms apart up to now. One INSERT ... SELECT in one transaction, generated by the
    # database itself (a Python loop took most of the figure's time), through cm's own triggers.
    # cm's indexes but the primary key are dropped first and made again after, from their own
    # definitions: building one over sorted rows is several times faster than a million inserts
    # into it, and leaves the same index. Jobs `start` + 1 to `start` + `n` of the series.
    STATE_SQL = ("CASE WHEN j % 50 = 0 THEN 'FAILURE' WHEN j % 97 = 0 THEN 'PENDING' "
                 "WHEN j % 499 = 0 THEN 'RETRY' WHEN j % 997 = 0 THEN 'REVOKED' "
                 "WHEN j % 1999 = 0 THEN 'STARTED' ELSE 'SUCCESS' END")

    def seed_sqlite(self, path, start, n, last):
        now = int(time.time() * 1000) - last * 10
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA cache_size = -262144")  # 256 MiB: random ids touch the whole index
            indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                 "AND tbl_name = 'jobs' AND sql IS NOT NULL").fetchall()
            for name, _ in indexes:
                db.execute(f"DROP INDEX {name}")
            db.execute(
                "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, "
                "submitted_ms, started_ms, finished_ms, result, error, deliveries, retries) "
                "SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-' || hex(randomblob(2)) || '-' "
                "|| hex(randomblob(2)) || '-' || hex(randomblob(6))), 'cm.launch', ?, ?, ?, ?, 'vm', "
                "'vm' || j, 'batch' || (j / 100), state, "
                "CASE WHEN state = 'PENDING' THEN NULL ELSE 'w' || (j % 4 + 1) || '@bench' END, "
                "? + j * 10, ? + j * 10 + 2, CASE WHEN state IN ('SUCCESS', 'FAILURE', 'REVOKED') "
                "THEN ? + j * 10 + 5 END, CASE WHEN state = 'SUCCESS' THEN '{\"state\": \"active\"}' END, "
                "CASE WHEN state = 'FAILURE' THEN 'simulated' END, 1, 0 "
                f"FROM (WITH RECURSIVE g(j) AS (SELECT ? UNION ALL SELECT j + 1 FROM g WHERE j < ?) "
                f"SELECT j, {self.STATE_SQL} AS state FROM g)",
                (f"{self.run}_db", json.dumps([[], LAUNCH_KWARGS]), SERVER, RECIPE, now, now, now,
                 start + 1, start + n))
            for _, sql in indexes:
                db.execute(sql)
            db.execute("ANALYZE")

    def seed_pg(self, db, start, n, last):
        now = int(time.time() * 1000) - last * 10
        indexes = [line.split("|", 1) for line in self.psql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' AND indexname <> 'jobs_pkey'",
            db=db).stdout.splitlines()]
        self.psql(
            f"DROP INDEX {', '.join(name for name, _ in indexes)}; "
            "INSERT INTO jobs (id, task, queue, args, server, recipe, kind, hosts, batch, state, worker, "
            "submitted_ms, started_ms, finished_ms, result, error, deliveries, retries) "
            f"SELECT gen_random_uuid()::text, 'cm.launch', '{self.run}_db', '[[], {{}}]', '{SERVER}', '{RECIPE}', "
            "'vm', 'vm' || j, 'batch' || (j / 100), state, "
            "CASE WHEN state = 'PENDING' THEN NULL ELSE 'w' || (j % 4 + 1) || '@bench' END, "
            f"{now} + j * 10, {now} + j * 10 + 2, CASE WHEN state IN ('SUCCESS', 'FAILURE', 'REVOKED') "
            f"THEN {now} + j * 10 + 5 END, CASE WHEN state = 'SUCCESS' THEN '{{\"state\": \"active\"}}' END, "
            "CASE WHEN state = 'FAILURE' THEN 'simulated' END, 1, 0 "
            f"FROM (SELECT j, {self.STATE_SQL} AS state FROM generate_series({start + 1}, {start + n}) AS j) AS g; "
            + "".join(f"{sql}; " for _, sql in indexes), db=db)
        # As autovacuum leaves a store after a bulk of inserts: the visibility map set, statistics.
        self.psql("VACUUM ANALYZE jobs", db=db)

    def time_first_page(self, s, key, label):
        """`cm jobs` as an operator types it: its default page, the newest 50, and the total."""
        self.cm(s, "jobs")  # warm-up: page cache, pool
        for _ in range(self.repeat):
            dt, p = self.cm(s, "jobs", label=label)
            if len(p.stdout.splitlines()) < 52:
                die(f"cm jobs printed {len(p.stdout.splitlines())} lines, not a header, 50 jobs and the total")
            self.add(key, dt * 1000)

    def has_web(self):
        p = subprocess.run([self.a.cm, "web", "--help"], capture_output=True, text=True, env=self.env)
        return p.returncode == 0

    def time_web(self, s, key):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        argv = [self.a.cm, "--config", s.path, "web", "--bind", f"127.0.0.1:{port}"]
        self.note_cmd("6 web", argv)
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started_procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.perf_counter() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=2).read()
                    break
                except OSError:
                    if time.perf_counter() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            url = base + "/cm/launch/db_stats"
            urllib.request.urlopen(url, timeout=30).read()
            for _ in range(self.repeat):
                t0 = time.perf_counter()
                urllib.request.urlopen(url, timeout=30).read()
                self.add(key, (time.perf_counter() - t0) * 1000)
            self.commands.setdefault("6 web GET", f"GET {url.replace(str(port), 'PORT')}")
        except OSError as e:
            self.notes[key] = f"not measured: {e}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def first_page(self):
        sizes = self.sizes["db_jobs"]
        web = self.web = self.has_web()
        s = self.stack("db-sqlite", [(f"{self.run}_db", ["d1"], ["cm.launch"])])
        self.cm(s, "jobs", "--limit", "1")  # creates and migrates the store
        have = 0
        for n in sizes:
            self.log(f"first page: SQLite with {n} jobs")
            self.seed_sqlite(os.path.join(s.dir, "cm.db"), have, n - have, sizes[-1])
            have = n
            self.time_first_page(s, f"page.sqlite.{n}", "6 cm sqlite")
            if web:
                self.time_web(s, f"web.sqlite.{n}")
        pg_missing = self.pg_ok()
        if pg_missing:
            for n in sizes:
                self.notes[f"page.pg.{n}"] = self.notes[f"web.pg.{n}"] = f"skipped: {pg_missing}"
            return
        name, url = self.pg_create("db")
        s = self.stack("db-pg", [(f"{self.run}_dbpg", ["d1"], ["cm.launch"])], url)
        self.cm(s, "jobs", "--limit", "1")
        have = 0
        for n in sizes:
            self.log(f"first page: PostgreSQL with {n} jobs")
            self.seed_pg(name, have, n - have, sizes[-1])
            have = n
            self.time_first_page(s, f"page.pg.{n}", "6 cm pg")
            if web:
                self.time_web(s, f"web.pg.{n}")
        self.pg_drop(name)

    # ----- cleanup -----

    def latency(self):
        """Figure 7, one job at a time: `cm provision/call --wait` of one job (whole command), and a
        Python Celery client's `send_task(...).get()` over rpc:// to a cm worker and to a Celery
        worker (solo pool, no-op task), one after another, alternating run by run."""
        from celery import Celery

        q_cm, q_celery = f"{self.run}_lat", f"{self.run}_latcelery"
        self.queues.append(q_celery)
        s = self.stack("latency", [(q_cm, ["lat1"], ["cm.provision"])])
        self.cm(s, "queue", "start", label="cm queue start")
        d = self.celery_dir("celery-latency")
        env = dict(self.env, BENCH_RESULT_BACKEND="rpc://")
        node = f"lat@{self.host}"
        self.celery_start([node], d, ["-P", "solo", "-Q", q_celery], label="celery (round trips)", env=env)
        client = Celery("cm_bench_client", broker=self.celery_broker, backend="rpc://")
        client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
        n, trips = self.sizes["one_job"], self.sizes["round_trips"]
        self.commands.setdefault(
            "round trips", f"python: client.send_task('cm.provision', args=['h', 'i'], queue=Q).get(timeout=30), "
            f"{trips} one after another per run (10 untimed first), client backend rpc://")

        def round_trips(queue, key):
            for _ in range(10):
                client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
            ts = []
            for _ in range(trips):
                t0 = time.perf_counter()
                client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
                ts.append(1000 * (time.perf_counter() - t0))
            ts.sort()
            self.add(f"rtt.{key}.p50", median(ts))
            self.add(f"rtt.{key}.p99", ts[min(len(ts) - 1, int(0.99 * len(ts)))])

        for i in range(self.repeat):
            self.log(f"latency, run {i + 1}/{self.repeat}: one job --wait, Python round trips")
            self.settle()
            for _ in range(n):
                dt, _ = self.cm(s, "provision", "--hosts", "x1", "--image", "i", "--wait", "--quiet",
                                label="cm provision --wait (one job)")
                self.add("lat.provision", 1000 * dt)
            for _ in range(n):
                dt, _ = self.cm(s, "call", "cm.provision", "--args", '["h", "i"]', "--wait", "--quiet",
                                label="cm call --wait (one job)")
                self.add("lat.call", 1000 * dt)
            for queue, key in ([(q_cm, "cm"), (q_celery, "celery")] if i % 2 == 0
                               else [(q_celery, "celery"), (q_cm, "cm")]):
                round_trips(queue, key)
        self.kill_celery(d)

    def command_jobs(self):
        """Figure 8: N jobs of /bin/true on 4 workers with concurrency 2 (8 at once): cm
        (`cm call bench.true --count N --wait`), Celery (a task that calls
        `subprocess.run(["/bin/true"])`, 4 prefork workers `-c 2`, counted by a done-file), pueue
        (`pueue add` N times, 8 in parallel, then `pueue wait`) where installed, and a bare loop that
        spawns /bin/true N times, 8 at once (`xargs -P 8`): the machine's limit."""
        n = self.sizes["command_jobs"]
        q = f"{self.run}_cmd"
        s = self.stack("commands", [(q, ["c1", "c2", "c3", "c4"], ["bench.true"])], prefetch=64, concurrency=2)
        self.cm(s, "queue", "start", label="cm queue start")
        cq = f"{self.run}_cmdcelery"
        self.queues.append(cq)
        d = self.celery_dir("celery-commands")
        done = os.path.join(d, "done")
        open(done, "w").close()
        env = dict(self.env, BENCH_DONE_FILE=done)
        nodes = [f"c{k}@{self.host}" for k in range(1, 5)]
        self.celery_start(nodes, d, ["-c", "2", "-Q", cq], label="4 celery -c 2 (command jobs)", env=env)
        self.commands.setdefault("8 celery", f"python: app.send_task('bench.true', queue=Q) x {n}, then wait until "
                                 "the done-file has N bytes")
        bare = ["bash", "-c", f"seq {n} | xargs -P 8 -n 1 /bin/true"]
        pueue = self.pueue_start()
        for i in range(self.repeat):
            self.log(f"command jobs, run {i + 1}/{self.repeat}: {n} x /bin/true, cm, Celery, bare loop")
            self.settle()
            dt, _ = self.cm(s, "call", "bench.true", "--count", str(n), "--wait", "--quiet", "--timeout", "900",
                            label="8 cm")
            self.add("cmd.cm", n / dt)
            self.settle()
            os.truncate(done, 0)
            t0 = time.perf_counter()
            with self.app.producer_or_acquire() as producer:
                for _ in range(n):
                    self.app.send_task("bench.true", queue=cq, producer=producer)
            self.celery_wait_done(done, n, t0)
            self.add("cmd.celery", n / (time.perf_counter() - t0))
            self.settle()
            dt, _ = self.sh(bare, label="8 bare loop")
            self.add("cmd.bare", n / dt)
            # One run only: pueued saves its whole state on every `pueue add`, so 2,000 adds take
            # minutes (the 5-run bench went past its 10-minute budget with two).
            if pueue and i == 0:
                self.settle()
                self.sh(pueue + ["clean"])
                t0 = time.perf_counter()
                for _ in range(n):
                    self.sh(pueue + ["add", "--", "/bin/true"], label="8 pueue add")
                self.sh(pueue + ["wait"], label="8 pueue wait")
                self.add("cmd.pueue", n / (time.perf_counter() - t0))
        self.kill_celery(d)
        if pueue:
            self.sh(pueue + ["shutdown"], check=False)

    def pueue_start(self):
        """A pueue daemon of the run's own (its own directory and socket), 8 tasks at once; the
        client's argv, or None where pueue is not installed (then the row says so)."""
        found = shutil.which("pueue") or os.path.expanduser("~/.cargo/bin/pueue")
        daemon = shutil.which("pueued") or os.path.expanduser("~/.cargo/bin/pueued")
        if not (os.access(found, os.X_OK) and os.access(daemon, os.X_OK)):
            return None
        d = os.path.join(self.tmp, "pueue")
        os.makedirs(d)
        cfg = os.path.join(d, "pueue.yml")
        with open(cfg, "w") as f:
            f.write(f"shared:\n  pueue_directory: {d}\n  runtime_directory: {d}\n  use_unix_socket: true\n"
                    f"  unix_socket_path: {d}/pueue.socket\ndaemon:\n  default_parallel_tasks: 8\n")
        client = [found, "-c", cfg]
        # In the foreground, as a child of the run's own: `pueued -d` forks a daemon that keeps
        # the driver's output pipes open, and cleanup kills it like the run's other processes.
        self.note_cmd("8 pueued", [daemon, "-c", cfg])
        self.started_procs.append(subprocess.Popen([daemon, "-c", cfg], env=self.env, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.perf_counter() + 30
        while self.sh(client + ["status"], check=False)[1].returncode != 0:
            if time.perf_counter() > deadline:
                self.notes["cmd.pueue"] = "not measured: pueued did not answer within 30 s"
                return None
            time.sleep(0.1)
        self.sh(client + ["parallel", "8"], label="8 pueue parallel")
        return client

    def cleanup(self):
        for proc in self.started_procs:
            if proc.poll() is None:
                try:
                    proc.kill()
                    proc.wait(timeout=10)
                except OSError:
                    pass
        for s in self.stacks:
            subprocess.run([self.a.cm, "--config", s.path, "server", "clean"], env=self.env,
                           capture_output=True)
        for d in self.celery_dirs:
            self.kill_celery(d)
        for name in list(self.pg_dbs):
            self.pg_drop(name)
        try:
            with self.app.connection_for_write() as conn:
                ch = conn.default_channel
                for q in self.queues:
                    try:
                        ch.queue_delete(q)
                    except Exception:
                        ch = conn.channel()
        except Exception as e:
            print(f"bench: could not delete queues: {e}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ----- the report -----

    def versions(self):
        def out(argv):
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
            except OSError:
                return "not found"

        import celery
        import kombu

        v = {"cm": out([self.a.cm, "--version"]),
             "rustc": out(["rustc", "--version"]),
             "Celery": f"celery {celery.__version__}, kombu {kombu.__version__}, Python {platform.python_version()}"}
        try:
            with self.app.connection_for_write() as conn:
                conn.connect()
                props = conn.connection.server_properties
                v["RabbitMQ"] = f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')} ({props.get('platform', '')})"
        except Exception as e:
            v["RabbitMQ"] = f"unknown ({e})"
        pg = self.psql("SHOW server_version", check=False) if shutil.which("psql") else None
        v["PostgreSQL"] = pg.stdout.strip() if pg and pg.returncode == 0 else "not reachable"
        return v

    def machine(self):
        model = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        return {"nproc": len(os.sched_getaffinity(0)), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
                "CPU": model, "kernel": f"{platform.system()} {platform.release()}"}

    def write(self, elapsed):
        R = self.results
        m = lambda k: median(R.get(k, []))  # noqa: E731
        rows = []

        def row(fig, what, unit, key, ratio_to=None, fmt="{:.3f}", ratio_note=""):
            xs = R.get(key, [])
            if not xs:
                rows.append(f"| {fig} | {what} | {unit} | {self.notes.get(key, 'not measured')} | | | 0 | |")
                return
            ratio = ""
            if ratio_to and R.get(ratio_to):
                ratio = f"{median(xs) / median(R[ratio_to]):.3f}{ratio_note}"
            rows.append(f"| {fig} | {what} | {unit} | {fmt.format(median(xs))} | {fmt.format(min(xs))} | "
                        f"{fmt.format(max(xs))} | {len(xs)} | {ratio} |")

        sz = self.sizes
        row(1, "cm queue start (4 workers, returns when all consume)", "s", "start.cm", "start.celery")
        row(1, "celery multi start p1 p2 l1 l2 -c 1, until all 4 answer ping", "s", "start.celery")
        row(2, "cm server stop (4 idle workers)", "s", "stop.cm", "stop.celery")
        row(2, "celery multi stopwait (4 idle workers)", "s", "stop.celery")
        row(3, "cm worker RSS, idle", "MiB", "rss.cm", "rss.celery_solo", "{:.1f}", " (vs solo)")
        row(3, "Celery worker RSS, idle, -P solo", "MiB", "rss.celery_solo", fmt="{:.1f}")
        row(3, "Celery worker RSS, idle, prefork -c 1 (parent + child)", "MiB", "rss.celery_prefork", fmt="{:.1f}")
        row(3, "cm worker PSS, idle (shared pages split between the 4)", "MiB", "pss.cm", "pss.celery_solo", "{:.1f}",
            " (vs solo)")
        row(3, "Celery worker PSS, idle, -P solo", "MiB", "pss.celery_solo", fmt="{:.1f}")
        row(3, "Celery worker PSS, idle, prefork -c 1 (parent + child)", "MiB", "pss.celery_prefork", fmt="{:.1f}")
        row(3, "cm worker anonymous memory (heap, stacks), idle", "MiB", "anon.cm", "anon.celery_solo", "{:.1f}",
            " (vs solo)")
        row(3, "Celery worker anonymous memory, idle, -P solo", "MiB", "anon.celery_solo", fmt="{:.1f}")
        row(3, "cm worker RSS after the SQLite throughput run", "MiB", "rss_load.cm_sqlite", "rss_load.celery_prefork",
            "{:.1f}", " (vs prefork)")
        row(3, "Celery worker RSS after its throughput run, prefork -c 1", "MiB", "rss_load.celery_prefork", fmt="{:.1f}")
        row(4, f"cm, SQLite store: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s", "tput.cm_sqlite",
            "tput.celery", "{:,.0f}")
        row(4, f"cm, PostgreSQL store: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s", "tput.cm_pg",
            "tput.celery", "{:,.0f}")
        row(4, f"cm, SQLite store, Celery task events on (send_events): {sz['cm_jobs']:,} jobs, 4 workers, "
            "launch --wait", "jobs/s", "tput.cm_sqlite_ev", "tput.cm_sqlite", "{:,.0f}",
            " (vs events off)")
        row(4, f"cm, SQLite store, default prefetch 4: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s",
            "tput.cm_sqlite_p4", "tput.celery", "{:,.0f}")
        row(4, f"Celery: {sz['celery_jobs']:,} no-op tasks, 4 workers -c 1, no result backend", "jobs/s",
            "tput.celery", fmt="{:,.0f}")
        row(4, f"raw ceiling: {sz['raw_jobs']:,} msgs, lapin, 1 publisher (confirms) + 1 consumer (acks)",
            "msgs/s", "tput.raw", fmt="{:,.0f}")
        row(4, f"raw ceiling with cm's messages (Celery protocol v2: 14 headers, a new task id each): "
            f"{sz['raw_jobs']:,} msgs, same pattern", "msgs/s", "tput.raw_celery", fmt="{:,.0f}")
        for k in sz["scale"]:
            w = 4 * k
            row(5, f"cm queue start, {w} workers ({k} per queue x 4 queues)", "s", f"scale.start.{w}")
            row(5, f"cm server stop, {w} workers", "s", f"scale.stop.{w}")
            row(5, f"cm RSS total, {w} workers", "MiB", f"scale.rss_total.{w}", fmt="{:.1f}")
            row(5, f"cm RSS per worker, {w} workers", "MiB", f"scale.rss_each.{w}", fmt="{:.1f}")
        row(5, "Celery reference, 4 workers: celery multi start until ping (= figure 1)", "s", "start.celery")
        row(5, "Celery reference, 4 workers: celery multi stopwait (= figure 2)", "s", "stop.celery")
        row(5, "Celery reference, 4 workers: RSS per prefork -c 1 worker (= figure 3)", "MiB", "rss.celery_prefork",
            fmt="{:.1f}")
        for n in sz["db_jobs"]:
            if self.web:
                row(6, f"GET /cm/launch/db_stats, {n:,} jobs, SQLite", "ms", f"web.sqlite.{n}", fmt="{:.1f}")
                row(6, f"GET /cm/launch/db_stats, {n:,} jobs, PostgreSQL", "ms", f"web.pg.{n}", fmt="{:.1f}")
            row(6, f"cm jobs (whole process, first 50), {n:,} jobs, SQLite", "ms", f"page.sqlite.{n}", fmt="{:.1f}")
            row(6, f"cm jobs (whole process, first 50), {n:,} jobs, PostgreSQL", "ms", f"page.pg.{n}", fmt="{:.1f}")

        n1 = sz["one_job"]
        row(7, f"cm provision --wait, one job, whole command ({n1} per run)", "ms", "lat.provision",
            fmt="{:.1f}")
        row(7, f"cm call cm.provision --wait, one job, whole command ({n1} per run)", "ms", "lat.call",
            fmt="{:.1f}")
        trips = sz["round_trips"]
        row(7, f"Python send_task().get() over rpc:// to a cm worker, p50 of {trips}", "ms", "rtt.cm.p50",
            "rtt.celery.p50", "{:.2f}")
        row(7, f"Python send_task().get() over rpc:// to a cm worker, p99 of {trips}", "ms", "rtt.cm.p99",
            "rtt.celery.p99", "{:.2f}")
        row(7, f"Python send_task().get() over rpc:// to a Celery worker (solo, no-op), p50 of {trips}", "ms",
            "rtt.celery.p50", fmt="{:.2f}")
        row(7, f"Python send_task().get() over rpc:// to a Celery worker (solo, no-op), p99 of {trips}", "ms",
            "rtt.celery.p99", fmt="{:.2f}")

        nc = sz["command_jobs"]
        row(8, f"cm: {nc:,} jobs of /bin/true, 4 workers x concurrency 2, call --count --wait", "jobs/s", "cmd.cm",
            "cmd.celery", "{:,.0f}")
        row(8, f"Celery: {nc:,} tasks calling subprocess.run(['/bin/true']), 4 workers -c 2", "jobs/s", "cmd.celery",
            fmt="{:,.0f}")
        row(8, f"pueue: {nc:,} x pueue add /bin/true, parallel 8, pueue wait", "jobs/s", "cmd.pueue", fmt="{:,.0f}")
        row(8, f"bare loop: /bin/true {nc:,} times, 8 at once (xargs -P 8)", "jobs/s", "cmd.bare", fmt="{:,.0f}")

        def target(name, ok_value, goal, met):
            return f"| {name} | {ok_value} | {goal} | {'met' if met else '**not met**'} |"

        def paired(key, peer):
            """cm's figure over the peer's, the median of the runs' own ratios (each run's pair was
            measured seconds apart, which this machine's drift from minute to minute moves less than
            it moves a ratio of medians), and those ratios; a ratio of medians where runs do not pair."""
            a, b = R.get(key, []), R.get(peer, [])
            if len(a) == len(b) and a and all(b):
                each = [x / y for x, y in zip(a, b)]
                return median(each), each
            return m(key) / m(peer), []

        def runs(each, pct=True):
            if len(each) < 2:
                return ""
            return " (runs: " + ", ".join(f"{100 * x:.0f}%" if pct else f"{x:.2f}" for x in each) + ")"

        targets = []
        if R.get("start.cm") and R.get("start.celery"):
            x = m("start.celery") / m("start.cm")
            targets.append(target("start", f"{x:.0f}x faster", ">= 20x faster than celery multi start", x >= 20))
        if R.get("stop.cm") and R.get("stop.celery"):
            x = m("stop.celery") / m("stop.cm")
            targets.append(target("stop", f"{x:.0f}x faster", ">= 20x faster than stopwait", x >= 20))
        if R.get("pss.cm") and R.get("pss.celery_solo"):
            x = m("pss.celery_solo") / m("pss.cm")
            targets.append(target("memory per worker (PSS)", f"1/{x:.1f} of a solo worker ({m('pss.cm'):.1f} vs "
                                  f"{m('pss.celery_solo'):.1f} MiB PSS; RSS {m('rss.cm'):.1f} vs "
                                  f"{m('rss.celery_solo'):.1f} MiB)", "<= 1/7 of a Celery solo worker", x >= 7))
        # Throughput is judged against the broker's own ceiling with cm's messages, measured in the
        # same run (the round-one "10x Celery" target is retired: it was above that ceiling).
        ceiling = m("tput.raw_celery") if R.get("tput.raw_celery") else None
        for key, name, goal in (("tput.cm_sqlite", "throughput, SQLite", 0.90),
                                ("tput.cm_pg", "throughput, PostgreSQL", 0.85)):
            if R.get(key) and ceiling:
                x, each = paired(key, "tput.raw_celery")
                targets.append(target(name, f"{100 * x:.0f}% of the ceiling with cm's messages{runs(each)}; "
                                      f"medians {m(key):,.0f} jobs/s, ceiling {ceiling:,.0f} msgs/s",
                                      f">= {100 * goal:.0f}% of that ceiling", x >= goal))
        if R.get("tput.cm_sqlite_ev") and R.get("tput.cm_sqlite"):
            x, each = paired("tput.cm_sqlite_ev", "tput.cm_sqlite")
            targets.append(target("task events on", f"{100 * x:.0f}% of events off{runs(each)}",
                                  ">= 95% of events off", x >= 0.95))
        for key, name in (("lat.provision", "one job, `cm provision --wait`"), ("lat.call", "one job, `cm call --wait`")):
            if R.get(key):
                targets.append(target(name, f"{m(key):.1f} ms median", "<= 20 ms median", m(key) <= 20))
        for p in ("p50", "p99"):
            cm_key, celery_key = f"rtt.cm.{p}", f"rtt.celery.{p}"
            if R.get(cm_key) and R.get(celery_key):
                x, each = paired(cm_key, celery_key)
                targets.append(target(f"Python round trip {p}", f"cm/Celery {x:.2f}{runs(each, pct=False)}; medians "
                                      f"cm {m(cm_key):.2f} ms, Celery {m(celery_key):.2f} ms",
                                      "cm at or below Celery (ratio <= 1)", x <= 1))

        if R.get("cmd.cm") and R.get("cmd.bare"):
            x, _ = paired("cmd.cm", "cmd.bare")
            peers = [k for k in ("cmd.celery", "cmd.pueue") if R.get(k)]
            ahead = all(m("cmd.cm") > m(k) for k in peers)
            targets.append(target("command jobs", f"{100 * x:.0f}% of the bare loop; "
                                  + ", ".join(f"{m('cmd.cm') / m(k):.1f}x {k[4:]}" for k in peers),
                                  ">= 50% of the bare loop, ahead of Celery and pueue", x >= 0.5 and ahead))

        mach, ver = self.machine(), self.versions()
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        mode = "smoke (tiny sizes, not a measurement)" if self.a.smoke else "full"
        L = ["# Benchmarks: cm vs Celery 5", "",
             f"Written by `bash bench/run.sh{' --smoke' if self.a.smoke else ''}` (`make bench`) on {now}; "
             f"mode {mode}; every figure repeated {self.repeat}x (`BENCH_REPEAT`), cm and Celery alternating "
             f"on the same broker; whole run {elapsed:.0f} s. Median, min and max over the runs; the ratio "
             "column is cm's median over Celery's (or over the row named).", "",
             "## Machine and versions", ""]
        L += [f"- {k}: {v}" for k, v in mach.items()]
        L += [f"- {k}: {v}" for k, v in ver.items()]
        L += ["", "## Results", "",
              "| Fig | What | Unit | Median | Min | Max | Runs | cm/Celery |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        L += rows
        if not self.web:
            L += ["", "Figure 6: `cm web` (db_stats) is not in this build, so the first page is measured as "
                  "`cm jobs` (the same newest-first page of 50 plus the total count, including process "
                  "start-up) against a store seeded with the jobs by direct SQL insert."]
        if R.get("rss.cm") and R.get("anon.cm"):
            rss, anon, pss = median(R["rss.cm"]), median(R["anon.cm"]), median(R.get("pss.cm", []))
            L += ["", f"Figure 3: a cm worker's {rss:.1f} MiB RSS is {anon:.1f} MiB of its own (heap, stacks, "
                  f"SQLite page cache) and {rss - anon:.1f} MiB of file pages, mostly the binary, which all workers "
                  f"share: PSS, which splits each shared page between the processes mapping it, is {pss:.1f} MiB "
                  "with 4 running, and what one more worker adds tends to its own memory. The target is judged "
                  "on PSS."]
        L += ["", "## Targets", "", "| Target | Measured | Goal | |", "| --- | --- | --- | --- |"] + targets
        L += self.profile_section()
        L += ["", "## Exact commands", "",
              "`$TMP` is the run's temp dir (one `fabfile.toml` per stack, `[simulation] step_seconds = [0, 0]`, "
              f"`concurrency = 1`; prefetch {TPUT_PREFETCH} in the throughput and drain stacks (`tput-*`, `drain-*`) "
              "but `tput-sqlite_p4-*`, which keeps the default 4; Celery's throughput workers get "
              f"`worker_prefetch_multiplier = {TPUT_PREFETCH}` alike), `$RUN` the run's unique name (queues, Celery node hosts, "
              "PostgreSQL databases); `celery` is bench/.venv's, run with `PYTHONPATH=bench` "
              "(`bench/celery_app.py`).", "", "```"]
        L += [f"[{k}] {v}" for k, v in sorted(self.commands.items())]
        L += ["```", "", "## Method", "",
              "- Start (1): wall time of `cm queue start` (it returns when every worker consumes) vs "
              "`celery multi start` plus polling `app.control.ping(destination=nodes, timeout=0.1)` until all four "
              "answer (the driver's connection is opened before the clock starts). Stop (2): wall time of "
              "`cm server stop` vs `celery multi stopwait`. One untimed warm-up start/stop each first.",
              "- Memory (3): VmRSS from /proc/PID/status and Pss and Anonymous from /proc/PID/smaps_rollup of "
              "each worker's pid file, idle right after start; "
              "prefork sums the parent and its pool child. The solo worker is killed after the reading.",
              "- Throughput (4): cm: time from spawning `cm launch --count N --hosts x --wait` (which stores N "
              "PENDING rows, publishes with confirms, then polls the store every 200 ms, sooner when the rate says "
              "the end is near) until it exits; 4 workers "
              "on one queue, started untimed before, a fresh store (and PostgreSQL database) per run. Celery: 4 "
              "workers (`-c 1`, prefork) started once; time from the first `send_task` until the workers have "
              "appended N bytes to a shared file (each task appends one; no result backend; Celery acks before "
              "running a task, cm after its final state is committed). Raw: `raw_ceiling N` "
              "(examples/raw_ceiling.rs), time from its first publish to its last ack.",
              "- Scale (5): 4 queues with 1, 2, 4 and 10 workers each; RSS right after start.",
              "- First page (6): a store filled by one `INSERT ... SELECT` (random uuid ids, 10 ms apart, mostly "
              "SUCCESS, 2% FAILURE, ~1% PENDING, a few RETRY, REVOKED, STARTED, on 4 workers) and grown from one "
              "size to the next; then `cm jobs` (default options: the newest 50 and the total, whole process) "
              "and a `GET /cm/launch/db_stats` from a `cm web` on that store, each after one untimed warm-up.",
              "- Latency (7): one job at a time on an idle worker (1 worker, `concurrency = 1`). The whole "
              "`cm provision --wait` / `cm call --wait` command, process start to exit, with zero-length steps: "
              "small batches are told each final state on their own channel (direct reply-to), once it is stored. Round "
              "trips: a Python Celery 5 client (`backend='rpc://'`) sends `cm.provision` and waits for its "
              "result, to the cm worker (which stores every state first) and to a Celery worker (`-P solo`, a "
              "no-op task, rpc:// result backend), the two alternating from run to run.",
              "- The machine is shared: other work running at the same time shows as \"other\" CPU in the "
              "profile tables and slows every figure, cm's and Celery's alike.",
              "- Targets that compare two figures (throughput against the ceiling, events on against off, the "
              "round trips, command jobs against the bare loop) take the median of the runs' own ratios: each run "
              "measures both seconds apart, and this machine's speed drifts by a third from one minute to the "
              "next, which moves a ratio of medians (the table's ratio column) more than it moves a pair.",
              ""]
        with open(self.a.out, "w") as f:
            f.write("\n".join(L))

    def profile_section(self):
        L = ["", "## Where cm's throughput time goes", ""]
        if not self.phases:
            return L + ["(no throughput runs)"]
        names = {"sqlite": "cm, SQLite", "sqlite_ev": "cm, SQLite, task events on", "sqlite_p4": "cm, SQLite, default prefetch 4", "pg": "cm, PostgreSQL", "celery": "Celery (publish = send_task loop)",
                 "raw": "raw ceiling", "raw_celery": "raw ceiling, cm's messages"}
        L += ["End-to-end runs of figure 4, medians. Publish: until `cm launch` printed the ids (PENDING rows "
              "stored, every publish confirmed); last final: the newest `finished_ms` in the store; total: until "
              "the command exited (seconds from the start).", "",
              "| Run | Publish s | Last final s | Total s | Jobs/s |", "| --- | ---: | ---: | ---: | ---: |"]
        for kind, xs in self.phases.items():
            pub = median([x[0] for x in xs])
            tot = median([x[1] for x in xs])
            lasts = [x[2] for x in xs if x[2] is not None]
            last = f"{median(lasts):.2f}" if lasts else ""
            n = self.sizes["raw_jobs" if kind.startswith("raw") else "celery_jobs" if kind == "celery" else "cm_jobs"]
            L.append(f"| {names.get(kind, kind)} | {pub:.2f} | {last} | {tot:.2f} | {n / tot:,.0f} |")
        L += ["", f"CPU seconds per process group during those runs (medians; {self.cores()} cores, so at most "
              f"{self.cores()} x wall; \"other\" is everything else on the machine, e.g. other builds):", "",
              "| Run | Wall s | Machine busy CPU-s | CPU-s by group |", "| --- | ---: | ---: | --- |"]
        for kind, profs in self.profiles.items():
            L.append(f"| {names.get(kind, kind)} | {median([p['wall'] for p in profs]):.2f} | "
                     f"{median([p['busy'] for p in profs]):.2f} | {self.cpu_text(profs)} |")
        d = self.drain
        if d:
            L += ["", f"The producer alone and the workers alone ({d['jobs']:,} jobs published with no worker "
                  "running, then drained by 1 or by 4 workers; Celery: consumers cancelled while publishing):", "",
                  "| Store | Publish only, jobs/s | Drain, 1 worker, jobs/s | Drain, 4 workers, jobs/s | "
                  "CPU-s by group, 4-worker drain |", "| --- | ---: | ---: | ---: | --- |"]
            for kind in ("sqlite", "pg"):
                if f"drain.{kind}.4" in d:
                    L.append(f"| cm, {names[kind][4:]} | {d[f'publish.{kind}.4']:,.0f} | {d[f'drain.{kind}.1']:,.0f} | "
                             f"{d[f'drain.{kind}.4']:,.0f} | {self.cpu_text([d[f'cpu.{kind}.4']])} |")
            if "drain.celery" in d:
                L.append(f"| Celery, no backend | {d['publish.celery']:,.0f} | | {d['drain.celery']:,.0f} | |")
        L += ["", "Findings:", ""] + self.findings()
        if isinstance(self.perf, dict):
            p = self.perf
            L += ["", f"`perf record --call-graph dwarf -p <the 4 workers>` over one more end-to-end SQLite run of "
                  f"figure 4 ({self.sizes['cm_jobs']:,} jobs, untimed): the workers' CPU by thread (`{p['main']}` is "
                  "the worker's tokio runtime, which also runs its SQLite writes; `lapin-io-loop` is the broker "
                  "connection's I/O, `cm-checkpoint` checkpoints the WAL), then by what the runtime thread was "
                  "doing (inclusive: a part's callees count in it):", "", "| Part | Share of the workers' CPU |",
                  "| --- | ---: |"]
            L += [f"| thread `{name}` | {100 * x:.1f}% |" for x, name in p["threads"]]
            L += [f"| {what} | {100 * p['parts'][key]:.1f}% |" for key, what, _ in self.PERF_PARTS]
        elif self.perf:
            L += ["", f"(perf: {self.perf})"]
        return L

    @staticmethod
    def cores():
        return len(os.sched_getaffinity(0))

    @staticmethod
    def cpu_groups(profs):
        groups = {}
        for p in profs:
            for k, v in p["cpu"].items():
                groups.setdefault(k, []).append(v)
        return {k: median(v) for k, v in groups.items()}

    def cpu_text(self, profs):
        return ", ".join(f"{k} {v:.2f}" for k, v in self.cpu_groups(profs).items() if v >= 0.005)

    def findings(self):
        out = []
        n = self.sizes["cm_jobs"]
        d = self.drain
        R = self.results
        ph = self.phases.get("sqlite")
        if ph:
            pub = median([x[0] for x in ph])
            tot = median([x[1] for x in ph])
            text = (f"- End to end (SQLite), `cm launch` needs {pub:.2f} s of the {tot:.2f} s to store and publish "
                    f"{n:,} jobs while the workers already drain" + (": the workers keep up, the producer's confirmed "
                    "publishes set the pace" if pub > 0.9 * tot else "") + ".")
            if "publish.sqlite.4" in d and "drain.sqlite.4" in d and R.get("tput.raw"):
                pub_rate, drain_rate = d["publish.sqlite.4"], d["drain.sqlite.4"]
                text += (f" Alone, the producer (PENDING rows, then confirmed publishes) does "
                         f"{pub_rate:,.0f} jobs/s against a raw ceiling of {median(R['tput.raw']):,.0f} msgs/s, "
                         f"the 4 workers alone drain {drain_rate:,.0f} jobs/s: "
                         + ("the producer is the slower side." if pub_rate < drain_rate
                            else "the workers are the slower side."))
            out.append(text)
        if R.get("tput.raw") and R.get("tput.raw_celery") and R.get("tput.cm_sqlite"):
            plain, celery, cm = (median(R[k]) for k in ("tput.raw", "tput.raw_celery", "tput.cm_sqlite"))
            out.append(f"- The message format costs the broker: the raw pattern (lapin alone, no store, no job) moves "
                       f"{plain:,.0f} msgs/s with a bare JSON body but {celery:,.0f} msgs/s with cm's messages, which "
                       f"carry the 14 headers and the properties of Celery's protocol v2. cm end to end, with the store, reaches {100 * cm / celery:.0f}% "
                       f"of the latter and {100 * cm / plain:.0f}% of the former (medians over medians; the targets "
                       "table pairs each run with the ceiling run beside it).")
        if "drain.sqlite.4" in d:
            one, four = d["drain.sqlite.1"], d["drain.sqlite.4"]
            x = four / one
            why = (f"more workers add little on {self.cores()} cores (one worker and RabbitMQ already keep them "
                   "busy, and SQLite takes one writer at a time)" if x < 1.5
                   else "more workers help, up to the cores")
            out.append(f"- Workers alone on SQLite: 4 workers drain {four:,.0f} jobs/s, {x:.1f}x one worker's "
                       f"{one:,.0f}; {why}. A job whose whole run lands in one group commit is one row of a "
                       "multi-row upsert plus one row of a multi-row history insert (its six states, the producer's "
                       "PENDING row is the other), and one multiple ack per commit "
                       "settles its deliveries."
                       + (f" On PostgreSQL: {d['drain.pg.1']:,.0f} jobs/s with 1 worker, {d['drain.pg.4']:,.0f} with 4."
                          if "drain.pg.4" in d else ""))
        if "cpu.sqlite.4" in d:
            g = self.cpu_groups([d["cpu.sqlite.4"]])
            m = d["jobs"]
            wk, rb = 1e6 * g.get("cm workers", 0) / m, 1e6 * g.get("RabbitMQ (beam.smp)", 0) / m
            busy, wall = d["cpu.sqlite.4"]["busy"], d["cpu.sqlite.4"]["wall"]
            cap = self.cores() * 1e6 / (wk + rb) if wk + rb > 0 else 0
            text = (f"- CPU per job while 4 workers drain SQLite: cm workers {wk:.0f} µs, RabbitMQ {rb:.0f} µs, so "
                    f"{self.cores()} cores would allow ~{cap:,.0f} jobs/s if CPU were the limit (the machine was "
                    f"{100 * busy / (self.cores() * wall):.0f}% busy, "
                    f"{g.get('other (whole machine minus the above)', 0):.1f} CPU-s of it other work).")
            e2e = self.profiles.get("sqlite")
            if e2e:
                share = median([p["busy"] / (self.cores() * p["wall"]) for p in e2e])
                ge = self.cpu_groups(e2e)
                per = {k: 1e6 * v / n for k, v in ge.items()}
                busy_us = 1e6 * median([p["busy"] for p in e2e]) / n
                parts = ", ".join(f"{k} {v:.0f} µs" for k, v in per.items() if v >= 1)
                text += (f" The end-to-end SQLite runs kept the machine {100 * share:.0f}% busy, {busy_us:.0f} µs "
                         f"of CPU per job ({parts}); 10,000 jobs/s on {self.cores()} cores leaves "
                         f"{self.cores() * 100:.0f} µs per job for all of it.")
            out.append(text)
        ceiling = self.profiles.get("raw_celery")
        if ceiling:
            # The machine is near its limit in these runs: the share of the ceiling a store can reach
            # is about the ceiling's CPU per message over cm's CPU per job, at a like busy share.
            def per_item(profs, n):
                return (1e6 * median([p["busy"] for p in profs]) / n,
                        median([p["busy"] / (self.cores() * p["wall"]) for p in profs]))
            c_us, c_share = per_item(ceiling, self.sizes["raw_jobs"])
            parts = []
            for kind, label in (("sqlite", "SQLite"), ("pg", "PostgreSQL")):
                if self.profiles.get(kind):
                    us, share = per_item(self.profiles[kind], self.sizes["cm_jobs"])
                    parts.append(f"{label} {us:.0f} µs per job ({100 * share:.0f}% busy), "
                                 f"so at most ~{100 * c_us / us:.0f}% of the ceiling")
            out.append(f"- What bounds the ratio to the ceiling: the ceiling run with cm's messages used {c_us:.0f} µs "
                       f"of the machine's CPU per message ({100 * c_share:.0f}% busy); cm end to end used "
                       + "; ".join(parts) + ". The CPU cm's processes add per job (the producer's PENDING rows, "
                       "the workers' commits and wake-ups, the store's server on PostgreSQL) is what is left to win.")
        pg = self.profiles.get("pg")
        if self.pg_stats and pg:
            upd, hot, indexes = self.pg_stats[-1]
            server_us = 1e6 * self.cpu_groups(pg).get("PostgreSQL", 0) / n
            out.append(f"- What PostgreSQL does per job: the server's processes used {server_us:.0f} µs of CPU per job "
                       f"(the CPU table above). Of the last run's {upd:,} updates of `jobs`, {hot:,} were HOT (the new row "
                       "version on the same page and no new index entry): no index reads a column a job's usual "
                       "update changes (`state` only through `unusual_state`, NULL for PENDING and SUCCESS alike), "
                       "and pages are filled to half by inserts so that the new versions find room; the others "
                       f"wrote an entry in each index they qualify for ({indexes} on the table; the partial ones hold "
                       "only rows with a batch, a server, a lease, an eta or an unusual state). SQLite rewrites the "
                       "row in place and changes only the index entries of the columns it sets.")
        e2e = self.profiles.get("sqlite")
        if isinstance(self.perf, dict) and e2e and ceiling:
            p, n = self.perf, self.sizes["cm_jobs"]
            workers_us = 1e6 * self.cpu_groups(e2e).get("cm workers", 0) / n
            busy_us = 1e6 * median([p_["busy"] for p_ in e2e]) / n
            commit_us = p["parts"]["commit"] * workers_us
            c_us = 1e6 * median([p_["busy"] for p_ in ceiling]) / self.sizes["raw_jobs"]
            out.append(f"- Where the workers' CPU goes end to end (the profile below): the store's commits take "
                       f"{100 * p['parts']['commit']:.0f}% of it, ~{commit_us:.0f} µs of the workers' {workers_us:.0f} µs "
                       f"per job (appending pages to the WAL {100 * p['parts']['wal']:.0f}%, reading back pages another "
                       f"worker's commit changed {100 * p['parts']['reread']:.0f}%); the jobs' own handling "
                       f"{100 * p['parts']['jobs']:.0f}%, parking and waking {100 * p['parts']['park']:.0f}%. Without "
                       f"those commits cm would use ~{busy_us - commit_us:.0f} µs of machine CPU per job, "
                       f"~{100 * c_us / max(busy_us - commit_us, 1):.0f}% of the ceiling's: the store's writes are the gap "
                       "(the producer's PENDING rows are more of it, not counted here).")
        if "drain.celery" in d and R.get("tput.celery"):
            out.append(f"- Celery: its workers alone drain {d['drain.celery']:,.0f} tasks/s; its Python producer "
                       f"alone sends {d['publish.celery']:,.0f}/s, so its end-to-end {median(R['tput.celery']):,.0f}/s "
                       "is bound by " + ("the producer" if d["publish.celery"] < d["drain.celery"] else "the workers")
                       + " (the slower side alone; run together they also share the cores).")
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cm", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--only", action="append", choices=FIGURES,
                    help="measure this figure alone (repeatable); the others' rows say not measured")
    ap.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    ap.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    a = ap.parse_args()
    if a.repeat is None:
        a.repeat = 1 if a.smoke else int(os.environ.get("BENCH_REPEAT") or 5)
    if a.repeat < 1:
        die("--repeat must be at least 1")
    a.cm, a.raw, a.out = os.path.abspath(a.cm), os.path.abspath(a.raw), os.path.abspath(a.out)
    b = Bench(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    try:
        for figure in a.only or FIGURES:
            # What the figure before wrote (a million-job store) is on disk before this one is
            # timed: its writeback would otherwise hold up the file-system journal that each of
            # cm's WAL appends waits for, a cost of that figure's, not of this one's.
            os.sync()
            getattr(b, figure)()
    finally:
        b.log("cleaning up")
        b.cleanup()
    b.write(time.perf_counter() - t0)
    b.log(f"wrote {a.out}")


if __name__ == "__main__":
    main()

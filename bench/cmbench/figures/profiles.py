"""Where figure 4's time goes, untimed aids to it: the producer alone and the workers alone (a
drain), an end-to-end run under `perf record`, and PostgreSQL's update statistics."""

import os
import re
import shutil
import signal
import subprocess
import time

from .. import broker, postgres, stack
from ..celery_multi import send
from ..cpu import CpuMeter
from ..procfs import pids_named
from ..run import die
from ..settings import LAUNCH_KWARGS, TPUT_PREFETCH

# What the inclusive profile is cut into: (key, what, frame it is under).
PERF_PARTS = [
    ("commit", "the store's commits (the group commit's SQLite transactions)", "cm::store::writer::run"),
    ("wal", "of which appending pages to the WAL", "pagerWalFrames"),
    ("reread", "of which reading pages back (another worker's commit changed the file)", "readDbPage"),
    ("jobs", "the jobs' own handling (decode, run, log lines, events, ack)", "cm::worker::delivery::handle"),
    ("park", "the runtime parking and waking (epoll, timers, the job log's write)",
     "current_thread::Context::park"),
]


def drain(run, pool, pg_missing):
    """Publish with no worker running (the producer alone), then time draining the queue with 1 and
    with 4 workers (the workers and the store alone)."""
    m = max(100, run.sizes["cm_jobs"] // 2)
    out = run.measured.drain = {"jobs": m}
    kinds = [("sqlite", None)]
    pg_name = None
    if not pg_missing:
        pg_name, url = postgres.create(run, "drain")
        kinds.append(("pg", url))
    four = ["w1", "w2", "w3", "w4"]
    for kind, url in kinds:
        s = stack.create(run, f"drain-{kind}", [(f"{run.name}_d{kind}", four, ["cm.launch"])], url,
                         prefetch=TPUT_PREFETCH)
        for workers in (["w1"], four):
            w = len(workers)
            run.log(f"profile: cm/{kind}: publish {m} jobs with no worker, drain with {w}")
            broker.settle(run)
            dt, _ = run.sh(s.launch_argv(m, wait=False), label="profile: publish only")
            out[f"publish.{kind}.{w}"] = m / dt
            done = "SELECT COUNT(*) FROM jobs WHERE state = 'SUCCESS'"
            target = (s.store_query(done) or 0) + m
            meter = CpuMeter({"cm workers": s.pids, "RabbitMQ (beam.smp)": broker.pids,
                              "PostgreSQL": lambda: pids_named("postgres")})
            broker.settle(run)
            meter.start()
            t0 = time.perf_counter()
            s.cm("queue", "start", *workers, label=f"profile: drain with {w}")
            while (s.store_query(done) or 0) < target:
                if time.perf_counter() > t0 + 900:
                    die(f"cm/{kind} workers did not drain {m} jobs in 900 s")
                time.sleep(0.02)
            dt = time.perf_counter() - t0
            out[f"cpu.{kind}.{w}"] = meter.stop()
            out[f"drain.{kind}.{w}"] = m / dt
            s.cm("server", "stop")
    if pg_name:
        postgres.drop(run, pg_name)
    # Celery, its workers alone: stop consuming, publish, consume again.
    n = run.sizes["celery_jobs"]
    run.log(f"profile: Celery: publish {n} tasks with consumers cancelled, then drain")
    run.app.control.cancel_consumer(pool.queue, destination=pool.nodes, reply=True, timeout=5)
    os.truncate(pool.done, 0)
    t0 = time.perf_counter()
    send(run.app, "cm.launch", pool.queue, n, kwargs=LAUNCH_KWARGS)
    out["publish.celery"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    run.app.control.add_consumer(pool.queue, destination=pool.nodes, reply=True, timeout=5)
    pool.wait_done(n, t0)
    out["drain.celery"] = n / (time.perf_counter() - t0)


def pg_updates(run, db):
    """How the run's updates of `jobs` went (its workers are stopped, so their statistics are
    in): updates, how many were HOT (no new index entries), and the table's indexes."""
    p = postgres.psql(run, "SELECT n_tup_upd, n_tup_hot_upd, (SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'jobs') "
                      "FROM pg_stat_user_tables WHERE relname = 'jobs'", db=db, check=False)
    try:
        upd, hot, indexes = (int(x) for x in p.stdout.strip().split("|"))
    except ValueError:
        return
    run.measured.pg_stats.append((upd, hot, indexes))


def end_to_end(run):
    """Untimed: one more end-to-end SQLite run of figure 4 under `perf record` with DWARF call
    graphs on the 4 workers: what share of their CPU each part of the work takes, inclusive."""
    if run.args.smoke or not shutil.which("perf"):
        return
    n = run.sizes["cm_jobs"]
    run.log(f"profile: cm/SQLite end to end, {n} jobs, workers under perf record")
    s = stack.create(run, "perf-sqlite", [(f"{run.name}_psqlite", ["w1", "w2", "w3", "w4"], ["cm.launch"])],
                     prefetch=TPUT_PREFETCH)
    s.cm("queue", "start", label="profile: perf (workers)")
    data = os.path.join(run.tmp, "perf.data")
    # 16 KiB of stack per sample unwinds through tokio and SQLite; 499 Hz keeps the file small.
    argv = ["perf", "record", "--call-graph", "dwarf,16384", "-F", "499", "-o", data,
            "-p", ",".join(str(p) for p in s.pids())]
    run.note_cmd("profile: perf", argv)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run.started_procs.append(proc)
    # perf writes its file's header after opening its events on the workers' threads: no job before.
    deadline = time.perf_counter() + 30
    while not (os.path.exists(data) and os.path.getsize(data) > 0):
        if proc.poll() is not None or time.perf_counter() > deadline:
            run.measured.perf = f"perf record did not start (exit {proc.poll()})"
            s.cm("server", "stop")
            return
        time.sleep(0.05)
    broker.settle(run)
    run.sh(s.launch_argv(n, wait=True), label="profile: perf (launch)")
    run.measured.perf = perf_stop(run, proc, data)
    s.cm("server", "stop")


def perf_stop(run, proc, data):
    """Stops `perf record` and reads its file: the workers' CPU by thread, and the runtime
    thread's cut into PERF_PARTS (or why there is no profile)."""
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
    main = os.path.basename(run.args.cm)[:15]  # the runtime thread keeps the binary's name
    # A frame can appear more than once (closures, inlined copies): its largest share counts.
    parts = {key: max([x for x, name in rows if name.startswith(main + " ") and frame in name] or [0.0]) / total
             for key, _, frame in PERF_PARTS}
    return {"threads": [(x / total, name) for x, name in threads if x / total >= 0.005],
            "parts": parts, "main": main}

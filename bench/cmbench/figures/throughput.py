"""Figure 4: jobs per second end to end, cm (SQLite, PostgreSQL, task events on, default prefetch)
and Celery on 4 workers, against the broker's own ceiling (examples/raw_ceiling.rs)."""

import json
import os
import subprocess
import time

from .. import broker, postgres, stack
from ..celery_multi import CeleryWorkers, send
from ..cpu import CpuMeter
from ..measurements import median
from ..procfs import pids_named, rss_kb, tree, tree_rss_kb
from ..run import die
from ..settings import LAUNCH_KWARGS, TPUT_PREFETCH
from . import profiles


def measure(run):
    m = run.measured
    pg_missing = postgres.missing(run)
    if pg_missing:
        m.notes["tput.cm_pg"] = f"skipped: {pg_missing}"
    pool = celery_pool(run)
    for i in range(run.repeat):
        run.log(f"throughput, run {i + 1}/{run.repeat}: cm/SQLite {run.sizes['cm_jobs']} jobs")
        cm_run(run, i, "sqlite")
        run.log(f"throughput, run {i + 1}/{run.repeat}: cm/SQLite, Celery task events on")
        cm_run(run, i, "sqlite_ev", events=True)
        run.log(f"throughput, run {i + 1}/{run.repeat}: cm/SQLite, default prefetch")
        cm_run(run, i, "sqlite_p4", prefetch=None)
        if not pg_missing:
            run.log(f"throughput, run {i + 1}/{run.repeat}: cm/PostgreSQL {run.sizes['cm_jobs']} jobs")
            name, url = postgres.create(run, f"t{i}")
            cm_run(run, i, "pg", url)
            profiles.pg_updates(run, name)
            postgres.drop(run, name)
        run.log(f"throughput, run {i + 1}/{run.repeat}: Celery {run.sizes['celery_jobs']} tasks")
        celery_run(run, pool)
        run.log(f"throughput, run {i + 1}/{run.repeat}: raw ceiling {run.sizes['raw_jobs']} messages")
        ceiling(run, i)
        run.log(f"throughput, run {i + 1}/{run.repeat}: raw ceiling with cm's messages")
        ceiling(run, i, celery=True)
    m.add("rss_load.celery_prefork", median([tree_rss_kb(p) / 1024 for p in pool.pids()]))
    profiles.end_to_end(run)
    profiles.drain(run, pool, pg_missing)
    pool.kill()


def cm_run(run, i, kind, store_url=None, prefetch=TPUT_PREFETCH, events=False):
    """One end-to-end run: `cm launch --count N --wait` onto 4 workers started before it."""
    m = run.measured
    q = f"{run.name}_t{kind}{i}"
    s = stack.create(run, f"tput-{kind}-{i}", [(q, ["w1", "w2", "w3", "w4"], ["cm.launch"])], store_url,
                     prefetch=prefetch, events=events)
    s.cm("queue", "start", label=f"4 cm {kind} (workers)")
    n = run.sizes["cm_jobs"]
    argv = s.launch_argv(n, wait=True)
    run.note_cmd(f"4 cm {kind}", argv)
    meter = CpuMeter({"cm workers": s.pids, "RabbitMQ (beam.smp)": broker.pids,
                      "PostgreSQL": lambda: pids_named("postgres")})
    err_path = os.path.join(s.dir, "launch.err")
    broker.settle(run)
    meter.start()
    wall0 = time.time()
    t0 = time.perf_counter()
    with open(err_path, "w") as err:
        p = subprocess.Popen([str(a) for a in argv], env=run.env, stdout=subprocess.PIPE, stderr=err)
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
    last = s.store_query("SELECT MAX(finished_ms) FROM jobs")
    rss = [rss_kb(pid) / 1024 for pid in s.pids()]
    s.cm("server", "stop")
    m.add(f"tput.cm_{kind}", n / total)
    m.add(f"rss_load.cm_{kind}", median(rss))
    m.phases.setdefault(kind, []).append((t_pub, total, (last - wall0 * 1000) / 1000 if last else None))
    m.profiles.setdefault(kind, []).append(prof)


def celery_pool(run):
    """The 4 Celery workers of the throughput figure, started once (untimed) and reused."""
    q = f"{run.name}_tcelery"
    run.queues.append(q)
    nodes = [f"t{k}@{run.host}" for k in range(1, 5)]
    pool = CeleryWorkers(run, "celery-tput", nodes, ["-c", "1", "-Q", q],
                         env={"BENCH_PREFETCH_MULTIPLIER": str(TPUT_PREFETCH)}, done_file=True, queue=q)
    pool.start(label="4 celery (workers)")
    return pool


def celery_run(run, pool):
    """One run of Celery's: N `send_task`s, then until the workers' done-file says N finished."""
    m = run.measured
    n = run.sizes["celery_jobs"]
    m.commands.setdefault(
        "4 celery", f"python: app.send_task('cm.launch', kwargs={LAUNCH_KWARGS}, queue=Q) x N "
        f"(N = {n}), then wait until the workers' done-file has N bytes")
    os.truncate(pool.done, 0)
    pids = lambda: [p for w in pool.pids() for p in tree(w)]  # noqa: E731
    meter = CpuMeter({"Celery workers": pids, "RabbitMQ (beam.smp)": broker.pids})
    broker.settle(run)
    meter.start()
    t0 = time.perf_counter()
    send(run.app, "cm.launch", pool.queue, n, kwargs=LAUNCH_KWARGS)
    t_pub = time.perf_counter() - t0
    pool.wait_done(n, t0)
    total = time.perf_counter() - t0
    m.profiles.setdefault("celery", []).append(meter.stop())
    m.add("tput.celery", n / total)
    m.phases.setdefault("celery", []).append((t_pub, total, None))


def ceiling(run, i, celery=False):
    """The broker's ceiling: lapin alone, one publisher with confirms and one consumer with acks.
    celery: the same pattern with cm's own messages (Celery protocol headers and properties)."""
    m = run.measured
    kind = "raw_celery" if celery else "raw"
    q = f"{run.name}_{kind}{i}"
    run.queues.append(q)
    n = run.sizes["raw_jobs"]
    meter = CpuMeter({"raw_ceiling": lambda: [], "RabbitMQ (beam.smp)": broker.pids})
    broker.settle(run)
    meter.start()
    flag = ["--celery"] if celery else []
    _, p = run.sh([run.args.raw, *flag, n, q, run.args.broker], label=f"4 {kind}")
    prof = meter.stop()
    r = json.loads(p.stdout.strip().splitlines()[-1])
    m.add(f"tput.{kind}", r["rate"])
    m.phases.setdefault(kind, []).append((r["publish_seconds"], r["seconds"], None))
    m.profiles.setdefault(kind, []).append(prof)

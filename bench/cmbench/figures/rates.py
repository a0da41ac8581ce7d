"""Figure 11, global rate limits (issue 31): the starts a second achieved against the configured
rate. cm: `[tasks."bench.limited"] rate_limit = "10/s"` on 4 workers over two hosts' configs
(two fabfile.toml, node_host a and b, 2 workers each) sharing one PostgreSQL database; N jobs
published at once (`cm call --count N`), each job's start its STARTED time in the store
(`cm jobs --json`). Celery: its own `rate_limit="10/s"` (bench/celery_app.py's `bench.limited`)
on 4 solo workers, 4N tasks sent at once, each task's start recorded by the task as it begins.
Celery's limit is per worker (a token bucket in each), so its 4 workers may start 4x the rate;
cm's is one limit for every worker, kept in the store. Celery is sent 4x the jobs so that both
sides run about as long.

The achieved rate is over the steady window, the starts left when the first and the last 10% are
dropped: (starts - 1) / (last start - first start of the window). At the head, cm's limit may
start a 100 ms burst at once after an idle spell and Celery's workers start as each gets its
first messages; at the tail, Celery's workers start their last few tasks late. (Past its first
second each Celery worker starts 1 to 5 a second, not 10, while idle: celery/celery#5927.)
One after the other, never at once: at once they would compete for the machine's 2 cores."""

import json
import os
import time

from .. import broker, postgres, stack
from ..celery_multi import CeleryWorkers, send
from ..procfs import TICK, cpu_ticks
from ..run import die

# The steady window: the starts left when this share of the first and of the last are dropped.
TRIM = 0.1


def measure(run):
    from celery_app import LIMITED_RATE

    m = run.measured
    n = run.sizes["rate_jobs"]
    m.commands.setdefault("11 window", f"rate {LIMITED_RATE}/s; cm {n} jobs, Celery {4 * n} tasks; achieved = "
                          f"(starts - 1) / (last - first start) over the steady window, the starts left when the first "
                          f"and the last {100 * TRIM:.0f}% are dropped")
    pg_missing = postgres.missing(run)
    if pg_missing:
        for k in ("rate.cm", "rate.cm.ratio", "rate.cm.cpu"):
            m.notes[k] = f"skipped: {pg_missing}"
        hosts = []
    else:
        hosts = cm_hosts(run, LIMITED_RATE)
        for i, s in enumerate(hosts):
            s.cm("queue", "start", label=f"11 cm queue start (host {'ab'[i]})")
    q_celery = f"{run.name}_ratecelery"
    run.queues.append(q_celery)
    starts_file = os.path.join(run.tmp, "celery-rate-starts")
    celery = CeleryWorkers(run, "celery-rates", [f"rl{i}@{run.host}" for i in range(1, 5)],
                           ["-P", "solo", "-Q", q_celery], env={"BENCH_STARTS_FILE": starts_file})
    celery.start(label="11 celery worker x4 (rates)")
    m.commands.setdefault("11 celery send", f"python: send_task('bench.limited', queue=Q) x {4 * n}, one producer")
    try:
        for i in range(run.repeat):
            run.log(f"rates, run {i + 1}/{run.repeat}: {n} cm jobs at {LIMITED_RATE}/s over 4 workers, "
                    f"{4 * n} Celery tasks at {LIMITED_RATE}/s per worker")
            for side in (("cm", "celery") if i % 2 == 0 else ("celery", "cm")):
                if side == "cm" and not hosts:
                    continue
                broker.settle(run)
                pids = [p for s in hosts for p in s.pids()] if side == "cm" else celery.pids()
                cpu0, t0 = workers_cpu(pids), time.perf_counter()
                starts = cm_starts(run, hosts[0], n) if side == "cm" else celery_starts(run, q_celery, starts_file,
                                                                                       4 * n)
                if starts is None:
                    continue
                # What the workers cost while they held to the rate: a rate-limited side should idle.
                m.add(f"rate.{side}.cpu", (workers_cpu(pids) - cpu0) / (time.perf_counter() - t0))
                achieved = steady_rate(starts)
                if achieved is None:
                    m.notes[f"rate.{side}"] = f"not measured: {len(starts)} starts, too few for a window"
                    continue
                m.add(f"rate.{side}", achieved)
                m.add(f"rate.{side}.ratio", achieved / LIMITED_RATE)
    finally:
        for i, s in enumerate(hosts):
            s.cm("server", "stop", label=f"11 cm server stop (host {'ab'[i]})", check=False)
        celery.kill()


def cm_hosts(run, rate):
    """Two hosts' configs (2 workers each) on one new PostgreSQL database, the task limited."""
    _, url = postgres.create(run, "rates")
    q = f"{run.name}_rate"
    keys = {"bench.limited": f'rate_limit = "{rate}/s"'}
    return [stack.create(run, f"rates-{h}", [(q, [f"r{h}1", f"r{h}2"], ["bench.limited"])], url,
                         task_keys=keys, node_host=f"{run.host}-{h}") for h in ("a", "b")]


def cm_starts(run, s, n):
    """Publishes n jobs at once from host a; once all are SUCCESS, their started_ms."""
    _, out = s.cm("call", "bench.limited", "--count", str(n), label="11 cm call bench.limited --count N")
    ids = set(out.stdout.split())
    if len(ids) != n:
        die(f"cm call --count {n} printed {len(ids)} ids")
    limit_s = 60 + n / 2
    deadline = time.time() + limit_s
    while True:
        _, out = s.cm("jobs", "--json", "--limit", "0", label="11 cm jobs")
        rows = [j for j in json.loads(out.stdout) if j["id"] in ids]
        if len(rows) == n and all(j["state"] == "SUCCESS" for j in rows):
            return [j["started_ms"] for j in rows]
        bad = [j for j in rows if j["state"] in ("FAILURE", "REVOKED")]
        if bad:
            die(f"rate-limited job {bad[0]['id']} ended {bad[0]['state']}: {bad[0].get('error')}")
        if time.time() > deadline:
            die(f"rate-limited jobs: {sum(j['state'] == 'SUCCESS' for j in rows)} of {n} SUCCESS after "
                f"{limit_s:.0f} s")
        time.sleep(0.5)


def celery_starts(run, q, starts_file, n):
    """Sends n tasks at once; once all have started (and the last one's write landed), their
    starts; None (and a note) if they did not in the time they may take at 2 a second."""
    open(starts_file, "w").close()
    send(run.app, "bench.limited", q, n)
    # Celery's limiter has taken 100 s for 400 tasks here (a tenth of its limits): a slow run is
    # a result to report, not a reason to end the bench.
    limit_s = 60 + n / 2
    deadline = time.time() + limit_s
    while True:
        with open(starts_file) as f:
            lines = [line.split() for line in f if line.strip()]
        starts = [float(start) for start, _ in lines]
        if len(starts) >= n:
            return starts
        if time.time() > deadline:
            run.measured.notes["rate.celery"] = f"not measured: Celery started {len(starts)} of {n} in {limit_s:.0f} s"
            return None
        time.sleep(0.2)


def workers_cpu(pids):
    """The CPU seconds the processes `pids` have used so far (those gone count 0)."""
    return sum(cpu_ticks(p) or 0 for p in pids) / TICK


def steady_rate(starts):
    """Starts a second over the steady window, the middle of the starts (None if under 3)."""
    starts = sorted(starts)
    cut = int(TRIM * len(starts))
    window = starts[cut:len(starts) - cut]
    if len(window) < 3 or window[-1] == window[0]:
        return None
    return (len(window) - 1) * 1000 / (window[-1] - window[0])

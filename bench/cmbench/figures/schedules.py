"""Figure 9, schedule firing jitter: a job every second on the whole seconds, the time from each
slot to its job's start. cm: `[schedules.tick] every = "1s"` firing `cm.provision` (zero-length
steps) on one idle worker, whose tick is the only firer; slot from `cm schedules history`, start
from the job's STARTED time in the store (`cm jobs --json`). Celery: `celery beat` with
`schedule(1 s, relative=True)` (bench/celery_app.py, its scheduler records each firing's
deadline) sending `bench.tick` to one idle solo worker, which records its start. One after the
other, never at once: both fire on the same whole seconds, and at once they would compete for
the machine at those very instants."""

import json
import math
import os
import subprocess
import time

from .. import broker, stack
from ..celery_multi import CeleryWorkers


def measure(run):
    m = run.measured
    n = run.sizes["schedule_seconds"]
    q_cm, q_celery = f"{run.name}_sched", f"{run.name}_schedcelery"
    run.queues.append(q_celery)
    s = stack.create(run, "schedules", [(q_cm, ["sch1"], ["cm.provision"])],
                     extra='[schedules.tick]\ntask = "cm.provision"\nargs = ["h", "i"]\nevery = "1s"')
    ticks = os.path.join(run.tmp, "celery-ticks")
    celery = CeleryWorkers(run, "celery-schedules", [f"sch@{run.host}"], ["-P", "solo", "-Q", q_celery],
                           env={"BENCH_TICKS_FILE": ticks})
    m.commands.setdefault("9 window", f"each side alone for {n} s of slots (whole seconds), its first slot "
                          f"at least {run.sizes['schedule_lead']} s after its workers (and beat) started")
    for i in range(run.repeat):
        run.log(f"schedules, run {i + 1}/{run.repeat}: {n} s of 1 s slots, cm then Celery beat (or back)")
        for side in (("cm", "celery") if i % 2 == 0 else ("celery", "cm")):
            broker.settle(run)
            if side == "cm":
                lags = cm_window(run, s, n)
            else:
                lags = celery_window(run, celery, q_celery, ticks, n)
            record(m, side, lags, n)


def window(n, lead):
    """The next n whole seconds, starting at least `lead` s from now: (first, last) in ms."""
    first = 1000 * (math.ceil(time.time() + lead))
    return first, first + 1000 * (n - 1)


def sleep_past(last_ms, slack_s=1.0):
    """Until `slack_s` after the slot `last_ms`: its job has started by then on an idle worker."""
    time.sleep(max(0.0, last_ms / 1000 + slack_s - time.time()))


def cm_window(run, s, n):
    s.cm("queue", "start", label="9 cm queue start")
    first, last = window(n, run.sizes["schedule_lead"])
    sleep_past(last)
    _, out = s.cm("schedules", "history", "tick", "--json", "--limit", "0", label="9 cm schedules history")
    slots = {f["job_id"]: f["slot_ms"] for f in json.loads(out.stdout) if first <= f["slot_ms"] <= last}
    _, out = s.cm("jobs", "--json", "--limit", "0", label="9 cm jobs")
    lags = [j["started_ms"] - slots[j["id"]] for j in json.loads(out.stdout)
            if j["id"] in slots and j.get("started_ms") is not None]
    s.cm("server", "stop", label="9 cm server stop")
    return lags


def celery_window(run, celery, queue, ticks, n):
    open(ticks, "w").close()
    beat = [run.celery, "-A", "celery_app", "beat", "-S", "celery_app:SlotScheduler", "--loglevel", "WARNING",
            f"--logfile={celery.dir}/beat.log"]
    run.note_cmd("9 celery beat", beat)
    proc = subprocess.Popen(beat, env=dict(run.env, BENCH_BEAT_QUEUE=queue), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=celery.dir)
    run.started_procs.append(proc)
    try:
        # beat starts while the worker does (what it sends before the worker consumes waits in
        # the queue, slots before the window); the window begins after the first task ran.
        celery.start(label="9 celery worker (schedules)")
        deadline = time.time() + 60
        while os.path.getsize(ticks) == 0:
            if proc.poll() is not None or time.time() > deadline:
                run.measured.notes["sched.celery.p50"] = "not measured: celery beat fired nothing in 60 s"
                return []
            time.sleep(0.05)
        first, last = window(n, run.sizes["schedule_lead"])
        sleep_past(last)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        celery.kill()
    lags = []
    with open(ticks) as f:
        for line in f:
            slot, started = (int(x) for x in line.split())
            if first <= round(slot / 1000) * 1000 <= last:
                lags.append(started - slot)
    return lags


def record(m, side, lags, n):
    if not lags:
        return
    lags.sort()
    m.add(f"sched.{side}.p50", lags[len(lags) // 2])
    m.add(f"sched.{side}.p99", lags[min(len(lags) - 1, int(0.99 * len(lags)))])
    m.add(f"sched.{side}.fired", 100 * len(lags) / n)

"""RabbitMQ as the bench sees it: its processes, and waiting until it is idle."""

import time

from .procfs import cpu_ticks, pids_named


def pids():
    return pids_named("beam.smp")


def settle(run, window=0.5, quiet_ticks=2, limit=20):
    """Waits (untimed) until RabbitMQ is idle: at most `quiet_ticks` of CPU over `window` s, or
    `limit` s. After a run of tens of thousands of persistent messages the broker cleans up its
    message store for seconds; that work must not be billed to the next run, cm's or Celery's
    (cm's end-to-end rate right after the raw-ceiling run was measured well below its own)."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        ps = pids()
        before = sum(cpu_ticks(p) or 0 for p in ps)
        time.sleep(window)
        if sum(cpu_ticks(p) or 0 for p in ps) - before <= quiet_ticks:
            return
    run.log(f"RabbitMQ still busy after {limit} s; measuring anyway")

"""No-op Celery 5 tasks named like cm's, for bench/run.sh (the Celery side of docs/BENCHMARKS.md).

Broker from $BENCH_BROKER; no result backend unless $BENCH_RESULT_BACKEND names one. If $BENCH_DONE_FILE is set, every task appends one
byte to it (O_APPEND, so concurrent workers never lose a write): the driver counts finished tasks
by the file size, without a result backend.
"""

import math
import os
import subprocess
import time
from datetime import timedelta

from celery import Celery
from celery.beat import Scheduler
from celery.schedules import schedule

# $BENCH_RESULT_BACKEND (rpc://) for the round-trip figure's worker; the others keep none.
_backend = os.environ.get("BENCH_RESULT_BACKEND")
app = Celery("cm_bench", broker=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
             backend=_backend)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=not _backend,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # cmbench/figures/throughput.py sets it for its workers, as it sets cm's prefetch (TPUT_PREFETCH).
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH_MULTIPLIER", "4")),
)

# The schedules figure's `celery beat`: `bench.tick` every second on the whole seconds, as cm's
# `every = "1s"` fires (relative=True: Celery's own rounding of an interval to its boundaries),
# to the queue $BENCH_BEAT_QUEUE.
if os.environ.get("BENCH_BEAT_QUEUE"):
    app.conf.beat_schedule = {
        "tick": {"task": "bench.tick", "schedule": schedule(timedelta(seconds=1), relative=True),
                 "options": {"queue": os.environ["BENCH_BEAT_QUEUE"]}},
    }


class SlotScheduler(Scheduler):
    """beat's in-memory scheduler that tells each firing its slot: beat passes none, so the
    deadline its own schedule computed (the whole second it is due at) goes in the kwargs, as cm's
    firing records its slot. Nothing else of beat's changes: when it wakes, how it sends."""

    def is_due(self, entry):
        state = entry.is_due()
        if state.is_due:
            # remaining_estimate is the deadline minus now: negative by beat's lateness.
            late = entry.schedule.remaining_estimate(entry.last_run_at).total_seconds()
            entry.kwargs["slot_ms"] = round(1000 * (time.time() + late))
        return state

_done_fd = None


def _done():
    global _done_fd
    path = os.environ.get("BENCH_DONE_FILE")
    if not path:
        return
    if _done_fd is None:
        _done_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_done_fd, b".")


@app.task(name="cm.launch")
def launch(*args, **kwargs):
    _done()


@app.task(name="cm.provision")
def provision(*args, **kwargs):
    _done()


@app.task(name="bench.noop")
def noop(*args, **kwargs):
    """The workflows figure's chain step: nothing (a chain passes it the step before's None)."""


@app.task(name="bench.tick")
def tick(slot_ms=None):
    """The schedules figure's task: appends "SLOT_MS START_MS" to $BENCH_TICKS_FILE (its start
    time as the task begins, as cm's worker records STARTED before it runs a job)."""
    started_ms = math.floor(1000 * time.time())
    fd = os.open(os.environ["BENCH_TICKS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{slot_ms} {started_ms}\n".encode())
    finally:
        os.close(fd)


@app.task(name="bench.true")
def true():
    """The command-jobs figure's task: run /bin/true, as cm's `[tasks."bench.true"]` does."""
    subprocess.run(["/bin/true"], check=True)
    _done()


# The rates figure's limit, Celery's own: per worker (each worker keeps its own token bucket),
# which is what the figure shows beside cm's global one. cmbench/figures/rates.py reads it.
LIMITED_RATE = 10


@app.task(name="bench.limited", rate_limit=f"{LIMITED_RATE}/s", bind=True)
def limited(self):
    """The rates figure's task: appends "START_MS NODE" to $BENCH_STARTS_FILE as it begins (its
    start time as cm's worker records STARTED before it runs a job; the node that ran it)."""
    started_ms = 1000 * time.time()
    fd = os.open(os.environ["BENCH_STARTS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{started_ms:.3f} {self.request.hostname}\n".encode())
    finally:
        os.close(fd)

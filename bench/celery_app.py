"""No-op Celery 5 tasks named like cm's, for bench/run.sh (the Celery side of docs/BENCHMARKS.md).

Broker from $BENCH_BROKER; no result backend unless $BENCH_RESULT_BACKEND names one. If $BENCH_DONE_FILE is set, every task appends one
byte to it (O_APPEND, so concurrent workers never lose a write): the driver counts finished tasks
by the file size, without a result backend.
"""

import os
import subprocess

from celery import Celery

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


@app.task(name="bench.true")
def true():
    """The command-jobs figure's task: run /bin/true, as cm's `[tasks."bench.true"]` does."""
    subprocess.run(["/bin/true"], check=True)
    _done()

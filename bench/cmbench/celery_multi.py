"""Celery's side: workers started and stopped by `celery multi` (bench/celery_app.py's tasks),
tasks sent from the driver, and the done-file its workers count finished tasks in."""

import glob
import os
import signal
import time

from .procfs import alive, live_pids, tree
from .run import die


class CeleryWorkers:
    """Celery nodes run by `celery multi`, their pid and log files in a temp dir of the run's."""

    def __init__(self, run, name, nodes, opts, env=None, done_file=False, queue=None):
        """env: variables for the workers on top of the run's; done_file: give them one; queue:
        the one the driver sends their tasks to."""
        self.run = run
        self.nodes = nodes
        self.opts = opts
        self.queue = queue
        self.dir = os.path.join(run.tmp, name)
        os.makedirs(self.dir)
        run.celery_groups.append(self)
        extra = dict(env or {})
        self.done = None
        if done_file:
            # Each task appends one byte (bench/celery_app.py): the size is the finished count.
            self.done = os.path.join(self.dir, "done")
            open(self.done, "w").close()
            extra["BENCH_DONE_FILE"] = self.done
        self.env = dict(run.env, **extra) if extra else None  # None: the run's own

    def multi(self, action, label=None):
        d = self.dir
        argv = [self.run.celery, "-A", "celery_app", "multi", action, *self.nodes, *self.opts,
                f"--pidfile={d}/%n.pid", f"--logfile={d}/%n.log"]
        return self.run.sh(argv, label=label, env=self.env)

    def start(self, label=None):
        """`celery multi start` until every node answers a ping; returns seconds."""
        t0 = time.perf_counter()
        self.multi("start", label=label)
        wait_pings(self.run.app, self.nodes)
        return time.perf_counter() - t0

    def pids(self):
        return live_pids(glob.glob(os.path.join(self.dir, "*.pid")))

    def kill(self):
        """SIGKILL the workers (and their pool children)."""
        pids = [p for w in self.pids() for p in reversed(tree(w))]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.perf_counter() + 10
        while any(alive(p) for p in pids) and time.perf_counter() < deadline:
            time.sleep(0.02)
        for path in glob.glob(os.path.join(self.dir, "*.pid")):
            os.remove(path)

    def wait_done(self, n, t0):
        """Until the done-file says n tasks finished (at most 900 s after t0)."""
        while os.path.getsize(self.done) < n:
            if time.perf_counter() > t0 + 900:
                die(f"Celery finished only {os.path.getsize(self.done)} of {n} tasks in 900 s")
            time.sleep(0.002)


def wait_pings(app, nodes, deadline_s=120):
    seen = set()
    deadline = time.perf_counter() + deadline_s
    while not seen >= set(nodes):
        if time.perf_counter() > deadline:
            die(f"Celery nodes {sorted(set(nodes) - seen)} did not answer ping in {deadline_s}s")
        missing = sorted(set(nodes) - seen)
        for reply in app.control.ping(destination=missing, timeout=0.1, limit=len(missing)) or []:
            seen.update(reply.keys())


def send(app, task, q, n, **options):
    """n messages of `task` to queue q on one producer."""
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task(task, queue=q, producer=producer, **options)

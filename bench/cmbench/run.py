"""One run of the bench: its arguments, sizes, unique name and temp dir, the Celery app, what it
measured, and what it started (for cleanup). Imports none of the modules that use it."""

import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid

from . import settings
from .measurements import Measurements


def die(msg):
    raise SystemExit(f"bench: {msg}")


class Run:
    def __init__(self, args):
        self.args = args
        self.sizes = settings.sizes(args.smoke, os.environ)
        self.repeat = args.repeat
        self.name = f"cmb{os.getpid()}x{uuid.uuid4().hex[:6]}"
        self.tmp = tempfile.mkdtemp(prefix=f"cm-bench-{self.name}-")
        self.host = self.name  # the @host part of the Celery node names: unique to this run
        self.celery = os.path.join(os.path.dirname(sys.executable), "celery")
        self.measured = Measurements()
        # What cleanup undoes: cm stacks, Celery worker groups, queues, databases, processes.
        self.stacks = []
        self.celery_groups = []
        self.queues = []
        self.pg_dbs = []
        self.started_procs = []
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/, celery_app's
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CM_")}
        self.celery_broker = args.broker.replace("%2f", "%2F")
        self.env["BENCH_BROKER"] = self.celery_broker
        self.env["PYTHONPATH"] = here + os.pathsep + self.env.get("PYTHONPATH", "")
        os.environ["BENCH_BROKER"] = self.celery_broker
        sys.path.insert(0, here)
        from celery_app import app  # noqa: E402 (needs BENCH_BROKER first)

        self.app = app
        self.t_begin = time.perf_counter()

    def log(self, msg):
        print(f"[{time.perf_counter() - self.t_begin:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def shown(self, argv):
        """A command line as the report shows it: the run's paths and names as placeholders."""
        text = shlex.join(str(a) for a in argv)
        text = text.replace(self.tmp, "$TMP").replace(self.name, "$RUN")
        text = text.replace(self.args.cm, "cm").replace(self.celery, "celery")
        return text.replace(self.args.raw, "target/release/examples/raw_ceiling")

    def note_cmd(self, label, argv):
        self.measured.commands.setdefault(label, self.shown(argv))

    def sh(self, argv, label=None, env=None, check=True, timeout=900):
        """Runs argv to its end; (seconds, CompletedProcess). A failure ends the bench if `check`."""
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

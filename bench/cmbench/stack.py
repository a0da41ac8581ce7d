"""A cm stack of the run's own: a temp dir with its fabfile.toml, its workers, its store."""

import json
import os
import sqlite3

from . import postgres
from .procfs import live_pids
from .settings import RECIPE, SERVER


class CmStack:
    def __init__(self, run, path, workers, store_url):
        self.run = run
        self.path = path
        self.dir = os.path.dirname(path)
        self.workers = workers
        self.store_url = store_url  # None: the SQLite store cm.db in the stack's dir

    def pids(self):
        return live_pids(os.path.join(self.dir, "run", f"celery@{w}.pid") for w in self.workers)

    def cm(self, *args, label=None, check=True):
        return self.run.sh([self.run.args.cm, "--config", self.path, *args], label=label, check=check)

    def launch_argv(self, n, wait):
        argv = [self.run.args.cm, "--config", self.path, "launch", "--server", SERVER, "--recipe", RECIPE,
                "--hosts", "x", "--count", str(n)]
        return argv + ["--wait", "--timeout", "900"] if wait else argv

    def store_query(self, sql):
        """One integer from the stack's store (None if it cannot be read)."""
        try:
            if self.store_url:
                out = postgres.psql(self.run, sql, db=self.store_url.rsplit("/", 1)[1]).stdout.strip()
            else:
                with sqlite3.connect(os.path.join(self.dir, "cm.db"), timeout=10) as db:
                    out = db.execute(sql).fetchone()[0]
            return int(out) if out is not None and out != "" else None
        except Exception:  # a profile aid only
            return None


def create(run, name, queues, store_url=None, prefetch=None, events=False, concurrency=1, extra=None,
           commands=None, queue_keys=None, task_keys=None, node_host=None):
    """A temp dir with its own fabfile.toml. queues: [(queue, [workers], [tasks])]; extra: more
    TOML tables (a [schedules.NAME]); commands: {task: argv} for tasks that are not /bin/true;
    queue_keys: more keys of every queue's table; task_keys: {task: more keys of its table};
    node_host: the `@HOST` of its workers' node names (another host's config, same machine)."""
    d = os.path.join(run.tmp, name)
    os.makedirs(d)
    store = store_url or "sqlite://" + os.path.join(d, "cm.db")
    parts = [
        f'[broker]\nurl = "{run.args.broker}"',
        '[paths]\npid_dir = "run"\nlog_dir = "log"',
        "[worker]\nstop_grace_seconds = 30\nstart_timeout_seconds = 120\nallow_root = true"
        + ("\nsend_events = true" if events else "")
        + (f"\nnode_host = {json.dumps(node_host)}" if node_host else ""),
    ]
    workers = []
    for q, ws, tasks in queues:
        run.queues += [q, q + ".dead"]
        workers += ws
        parts.append(f"[queues.{q}]\nworkers = {json.dumps(ws)}\ntasks = {json.dumps(tasks)}\nconcurrency = {concurrency}"
                     + (f"\nprefetch = {prefetch}" if prefetch else "")
                     + (f"\n{queue_keys}" if queue_keys else ""))
    # A task that is not cm's own needs a definition; these queues only start and stop.
    for task in sorted({t for _, _, tasks in queues for t in tasks if not t.startswith("cm.")}):
        argv = (commands or {}).get(task, ["/bin/true"])
        parts.append(f'[tasks."{task}"]\ncommand = {json.dumps(argv)}'
                     + (f"\n{task_keys[task]}" if task in (task_keys or {}) else ""))
    parts.append("[simulation]\nstep_seconds = [0, 0]")
    parts.append(f'[store]\nurl = "{store}"')
    if extra:
        parts.append(extra)
    path = os.path.join(d, "fabfile.toml")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    s = CmStack(run, path, workers, store_url)
    run.stacks.append(s)
    return s

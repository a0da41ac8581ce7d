"""Undoing what a run started, even after a failure: processes, cm stacks, Celery workers,
databases, queues and the temp dir."""

import shutil
import subprocess
import sys

from . import postgres


def cleanup(run):
    for proc in run.started_procs:
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(timeout=10)
            except OSError:
                pass
    for s in run.stacks:
        subprocess.run([run.args.cm, "--config", s.path, "server", "clean"], env=run.env,
                       capture_output=True)
    for workers in run.celery_groups:
        workers.kill()
    for name in list(run.pg_dbs):
        postgres.drop(run, name)
    try:
        with run.app.connection_for_write() as conn:
            ch = conn.default_channel
            for q in run.queues:
                try:
                    ch.queue_delete(q)
                except Exception:
                    ch = conn.channel()
    except Exception as e:
        print(f"bench: could not delete queues: {e}", file=sys.stderr)
    shutil.rmtree(run.tmp, ignore_errors=True)

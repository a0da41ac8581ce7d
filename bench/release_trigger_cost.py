#!/usr/bin/env python3
"""The SQLite release trigger's cost on the hot path (docs/BENCHMARKS.md, "The release trigger's
cost"): instructions per final-state write of a job that is no one's parent, with the release
triggers and without them, counted by callgrind, so that the machine's load does not move them.
The release triggers are those of the store `--cm` makes: 0011's `jobs_release` with 0014's
`flow_slots_free` and 0015's `unique_keys_release`, or from 0019 on the one thin trigger
`jobs_state_ends` in their place; "without" drops them all (the store as before workflows).

    bench/.venv/bin/python bench/release_trigger_cost.py --cm target/release/cm [--jobs 5000]

A store of cm's own schema is made by `cm launch --count N` with no worker (needs RabbitMQ at
127.0.0.1:5672; the queue is deleted after), copied twice, the triggers dropped from one copy.
Each copy then takes the N jobs to SUCCESS as a worker writes them, in transactions of 256:
(a) one `UPDATE ... SET state` per job, as a job's final event alone; (b) multi-row upserts of
64 rows, as a worker's group commit writes whole runs (RUNS_PER_UPSERT). Python's sqlite3
runs the statements (its SQLite, printed, not cm's bundled one); a run of 0 jobs is subtracted,
so what is left is per job. Needs valgrind.
"""

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid

WRITER = r'''
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
db.execute("PRAGMA recursive_triggers=ON")
n, per = int(sys.argv[2]), int(sys.argv[3])
rows = list(db.execute("SELECT id, task, queue, args FROM jobs WHERE state = 'PENDING' LIMIT ?", (n,)))
for k in range(0, len(rows), 256):
    db.execute("BEGIN IMMEDIATE")
    chunk = rows[k:k + 256]
    if per == 1:
        for r in chunk:
            db.execute("UPDATE jobs SET state = 'SUCCESS', finished_ms = 2 WHERE id = ?", (r[0],))
    else:
        for j in range(0, len(chunk), per):
            part = chunk[j:j + per]
            db.execute("INSERT INTO jobs (id, task, queue, args, state, worker, submitted_ms, started_ms, "
                       "finished_ms, deliveries) VALUES "
                       + ", ".join(["(?, ?, ?, ?, 'SUCCESS', 'w1@h', 1, 1, 2, 1)"] * len(part))
                       + " ON CONFLICT (id) DO UPDATE SET deliveries = jobs.deliveries + 1, "
                       "state = excluded.state, worker = excluded.worker, started_ms = excluded.started_ms, "
                       "finished_ms = excluded.finished_ms", [v for r in part for v in r])
    db.execute("COMMIT")
'''


def instructions(tmp, store, jobs, per):
    """callgrind's instruction count of WRITER over a fresh copy of `store`."""
    run = os.path.join(tmp, "run.db")
    shutil.copy(store, run)
    out = os.path.join(tmp, "cg.out")
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                        "-c", WRITER, run, str(jobs), str(per)], capture_output=True, text=True, check=True)
    for line in p.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1])
    raise SystemExit(f"no instruction count from callgrind:\n{p.stderr[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cm", required=True)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cm-trigger-cost-")
    queue = f"cm_trigger_cost_{uuid.uuid4().hex[:8]}"
    try:
        with open(os.path.join(tmp, "fabfile.toml"), "w") as f:
            f.write(f'[broker]\nurl = "{a.broker}"\n[paths]\npid_dir = "run"\nlog_dir = "log"\n'
                    f'[queues.{queue}]\nworkers = ["t1"]\ntasks = ["cm.launch"]\n'
                    f'[store]\nurl = "sqlite://{tmp}/cm.db"\n')
        subprocess.run([a.cm, "--config", os.path.join(tmp, "fabfile.toml"), "launch", "--server",
                        "india_openstack_essex", "--recipe", "Hadoop", "--hosts", "x", "--count", str(a.jobs)],
                       check=True, stdout=subprocess.DEVNULL)
        stores = {}
        for kind in ("with", "without"):
            stores[kind] = os.path.join(tmp, f"{kind}.db")
            src = sqlite3.connect(os.path.join(tmp, "cm.db"))
            dst = sqlite3.connect(stores[kind])
            src.backup(dst)
            src.close()
            if kind == "without":
                # Every release trigger the store has: 0011's, 0014's and 0015's three, or
                # 0019's one thin trigger in their place (the release behind it is not run then).
                for name in ("jobs_release", "flow_slots_free", "unique_keys_release", "jobs_state_ends"):
                    dst.execute(f"DROP TRIGGER IF EXISTS {name}")
                dst.commit()
            dst.close()
        print(f"{a.jobs} jobs, SQLite {sqlite3.sqlite_version} (Python's), instructions per job:")
        for per, what in ((1, "one UPDATE per job (a final event alone)"),
                          (64, "multi-row upsert of 64 (a group commit's whole runs)")):
            per_job = {}
            for kind, store in stores.items():
                base = instructions(tmp, store, 0, per)
                per_job[kind] = (instructions(tmp, store, a.jobs, per) - base) / a.jobs
            extra = per_job["with"] - per_job["without"]
            print(f"  {what}: with the trigger {per_job['with']:,.0f}, without {per_job['without']:,.0f}, "
                  f"the trigger {extra:+,.0f} ({100 * extra / per_job['without']:+.1f}%)")
    finally:
        try:
            from kombu import Connection

            with Connection(a.broker.replace("%2f", "%2F")) as conn:
                conn.default_channel.queue_delete(queue)
        except Exception as e:  # the queue is the run's own; say so, and go on
            print(f"could not delete queue {queue}: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

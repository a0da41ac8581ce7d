#!/usr/bin/env python3
"""Two cm binaries side by side in one run: the throughput and round-trip figures of `make bench`
(figure 4's cm/SQLite and cm/PostgreSQL end to end, figure 7's one-job `--wait` and Python rpc
round trips), each figure measured for both binaries back to back, the order alternating run by
run, so that the machine's drift falls on both alike. Prints each figure's medians and the median
of the per-run ratios (after / before).

    bench/.venv/bin/python bench/compare.py --before OLD_CM --after NEW_CM [--repeat 5]

A refactor that must not cost speed is judged by these ratios (issue 27: within 5%). Uses the
bench's own stacks and measurements (bench/cmbench); needs RabbitMQ and PostgreSQL as the bench
does. Sizes: as the full bench, or BENCH_CM_JOBS / BENCH_ROUND_TRIPS.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cmbench import postgres, stack  # noqa: E402
from cmbench.cleanup import cleanup  # noqa: E402
from cmbench.figures import throughput  # noqa: E402
from cmbench.measurements import median  # noqa: E402
from cmbench.run import Run  # noqa: E402


def round_trips(run, client, queue, trips):
    """p50 and p99 (ms) of `trips` Python send_task(...).get() round trips to `queue`."""
    for _ in range(10):
        client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
    ts = []
    for _ in range(trips):
        t0 = time.perf_counter()
        client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
        ts.append(1000 * (time.perf_counter() - t0))
    ts.sort()
    return median(ts), ts[min(len(ts) - 1, int(0.99 * len(ts)))]


def one_run(run, i, binaries, client, trips):
    """Each figure for each binary, in this run's order; {figure: {label: value}}."""
    out = {}
    order = list(binaries.items()) if i % 2 == 0 else list(reversed(binaries.items()))
    for label, binary in order:
        run.args.cm = binary
        run.log(f"run {i + 1}: {label}: cm/SQLite throughput")
        throughput.cm_run(run, f"{i}{label}", "sqlite")
        out.setdefault("throughput SQLite (jobs/s)", {})[label] = run.measured.results["tput.cm_sqlite"][-1]
        if not postgres.missing(run):
            run.log(f"run {i + 1}: {label}: cm/PostgreSQL throughput")
            name, url = postgres.create(run, f"c{i}{label}")
            throughput.cm_run(run, f"{i}{label}", "pg", url)
            postgres.drop(run, name)
            out.setdefault("throughput PostgreSQL (jobs/s)", {})[label] = run.measured.results["tput.cm_pg"][-1]
    for label, binary in order:
        run.args.cm = binary
        run.log(f"run {i + 1}: {label}: one-job --wait and round trips")
        s = stack.create(run, f"lat-{i}-{label}", [(f"{run.name}_lat{i}{label}", ["lat1"], ["cm.provision"])])
        s.cm("queue", "start")
        waits = [1000 * s.cm("provision", "--hosts", "x1", "--image", "i", "--wait", "--quiet")[0]
                 for _ in range(run.sizes["one_job"])]
        out.setdefault("one job provision --wait (ms)", {})[label] = median(waits)
        p50, p99 = round_trips(run, client, f"{run.name}_lat{i}{label}", trips)
        out.setdefault("rpc round trip p50 (ms)", {})[label] = p50
        out.setdefault("rpc round trip p99 (ms)", {})[label] = p99
        s.cm("server", "stop")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    ap.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    a = ap.parse_args()
    binaries = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    a.cm, a.raw, a.out, a.smoke = binaries["before"], "", os.devnull, False
    run = Run(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from celery import Celery

    client = Celery("cm_compare_client", broker=run.celery_broker, backend="rpc://")
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    trips = int(os.environ.get("BENCH_ROUND_TRIPS") or run.sizes["round_trips"])
    runs = []
    try:
        for i in range(a.repeat):
            os.sync()
            runs.append(one_run(run, i, binaries, client, trips))
    finally:
        run.log("cleaning up")
        cleanup(run)
    print(f"| figure | before (median) | after (median) | after / before, median of {a.repeat} paired runs (min-max) |")
    print("| --- | --- | --- | --- |")
    for figure in runs[0]:
        before = [r[figure]["before"] for r in runs]
        after = [r[figure]["after"] for r in runs]
        ratios = sorted(x / y for x, y in zip(after, before))
        print(f"| {figure} | {median(before):.2f} | {median(after):.2f} | "
              f"{median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}) |")


if __name__ == "__main__":
    main()

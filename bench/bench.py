#!/usr/bin/env python3
"""The driver behind bench/run.sh: cm against Celery 5 on the same broker, written to Markdown.

Run it through bench/run.sh (which builds cm and the raw_ceiling example and picks the Celery
venv's python, since the package imports celery). Everything lives in a fresh temp dir, on queues
and a PostgreSQL database named after this run, and is removed on exit, even on Ctrl-C. The work
is in bench/cmbench/ (its __init__ is the map).
"""

import argparse
import os
import signal
import sys
import time

from cmbench import report
from cmbench.cleanup import cleanup
from cmbench.figures import MEASURE
from cmbench.run import Run, die


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cm", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--only", action="append", choices=tuple(MEASURE),
                    help="measure this figure alone (repeatable); the others' rows say not measured")
    ap.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    ap.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    a = ap.parse_args()
    if a.repeat is None:
        a.repeat = 1 if a.smoke else int(os.environ.get("BENCH_REPEAT") or 5)
    if a.repeat < 1:
        die("--repeat must be at least 1")
    a.cm, a.raw, a.out = os.path.abspath(a.cm), os.path.abspath(a.raw), os.path.abspath(a.out)
    run = Run(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    try:
        for figure in a.only or MEASURE:
            # What the figure before wrote (a million-job store) is on disk before this one is
            # timed: its writeback would otherwise hold up the file-system journal that each of
            # cm's WAL appends waits for, a cost of that figure's, not of this one's.
            os.sync()
            MEASURE[figure](run)
    finally:
        run.log("cleaning up")
        cleanup(run)
    report.write(run, time.perf_counter() - t0)
    run.log(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""docs/BENCHMARKS.md: the header, machine and versions, Results, Targets, where cm's throughput
time goes, the exact commands and the method, written in one go once every figure ran."""

from datetime import datetime, timezone

from ..measurements import median
from ..settings import TPUT_PREFETCH
from . import throughput_time
from .environment import machine, versions
from .results import rows
from .targets import targets


# How each figure is measured: the report's last section, the same in every run.
METHOD = [
    "- Start (1): wall time of `cm queue start` (it returns when every worker consumes) vs "
    "`celery multi start` plus polling `app.control.ping(destination=nodes, timeout=0.1)` until all four "
    "answer (the driver's connection is opened before the clock starts). Stop (2): wall time of "
    "`cm server stop` vs `celery multi stopwait`. One untimed warm-up start/stop each first.",
    "- Memory (3): VmRSS from /proc/PID/status and Pss and Anonymous from /proc/PID/smaps_rollup of "
    "each worker's pid file, idle right after start; "
    "prefork sums the parent and its pool child. The solo worker is killed after the reading.",
    "- Throughput (4): cm: time from spawning `cm launch --count N --hosts x --wait` (which stores N "
    "PENDING rows, publishes with confirms, then polls the store every 200 ms, sooner when the rate says "
    "the end is near) until it exits; 4 workers "
    "on one queue, started untimed before, a fresh store (and PostgreSQL database) per run. Celery: 4 "
    "workers (`-c 1`, prefork) started once; time from the first `send_task` until the workers have "
    "appended N bytes to a shared file (each task appends one; no result backend; Celery acks before "
    "running a task, cm after its final state is committed). Raw: `raw_ceiling N` "
    "(examples/raw_ceiling.rs), time from its first publish to its last ack.",
    "- Scale (5): 4 queues with 1, 2, 4 and 10 workers each; RSS right after start.",
    "- First page (6): a store filled by one `INSERT ... SELECT` (random uuid ids, 10 ms apart, mostly "
    "SUCCESS, 2% FAILURE, ~1% PENDING, a few RETRY, REVOKED, STARTED, on 4 workers) and grown from one "
    "size to the next; then `cm jobs` (default options: the newest 50 and the total, whole process) "
    "and a `GET /cm/launch/db_stats` from a `cm web` on that store, each after one untimed warm-up.",
    "- Latency (7): one job at a time on an idle worker (1 worker, `concurrency = 1`). The whole "
    "`cm provision --wait` / `cm call --wait` command, process start to exit, with zero-length steps: "
    "small batches are told each final state on their own channel (direct reply-to), once it is stored. Round "
    "trips: a Python Celery 5 client (`backend='rpc://'`) sends `cm.provision` and waits for its "
    "result, to the cm worker (which stores every state first) and to a Celery worker (`-P solo`, a "
    "no-op task, rpc:// result backend), the two alternating from run to run.",
    "- Schedules (9): a job every second on the whole seconds, one idle worker, each side alone for the "
    "window (cm, then Celery, alternating which goes first run by run; never both at once, since both fire "
    "on the same instants). cm: `[schedules.tick] every = \"1s\"` firing `cm.provision` (zero-length steps); "
    "the slot is the firing's `slot_ms` (`cm schedules history tick --json`), the start the job's "
    "STARTED time in the store (`started_ms`, `cm jobs --json`), which the worker records as it begins the "
    "job. Celery: `celery beat` with `schedule(timedelta(seconds=1), relative=True)` (Celery's own rounding "
    "of an interval to its whole-second boundaries, the same slots) sending `bench.tick` to a `-P solo` "
    "worker. beat passes no slot, so its scheduler (bench/celery_app.py `SlotScheduler`, beat's in-memory "
    "`Scheduler` with one override) adds to each firing's kwargs the deadline beat's schedule itself "
    "computed (`remaining_estimate` of the entry, plus now); the task records it and the wall clock as its "
    "body begins. Both sides thus measure slot -> a worker starting the job: the scheduler's wake-up, the "
    "publish, the broker, the worker's receipt (and for cm its STARTED commit). The first slot is at least "
    "1 s after the workers (and beat's first firing); with 30 slots a p99 is the largest lag.",
    "- Workflows (10): every cm workflow waits `--after` a gate job (`bench.gate`, a command task that "
    "returns once the driver creates a file, which it does after the workflow's last publish) so that all "
    "its jobs are in the store before the first may run, as a Celery chain is in its first message; the "
    "figure checks each job's `submitted_ms` is before the gate's end. Chain: 10 "
    "`cm.provision` jobs (zero-length steps), each `cm call --after` the one before, on one idle worker "
    "(`concurrency = 1`); the time from the gate's end (the commit that releases step 1 into the outbox) to "
    "step 10's end, both the store's timestamps (`finished_ms`, `cm jobs --json`): 10 hops of release, "
    "outbox publish, delivery, run and commit. Celery: `chain` of 10 `bench.noop` signatures "
    "(`queue=Q`) sent by a Python client with `backend='rpc://'` to a `-P solo` worker, from "
    "`apply_async()` to `.get()` returning, on the client's clock (one publish by the client, nine by the "
    "worker, the last result back). cm and Celery alternate run by run. Fan-in: N `cm.provision` parents "
    "(`cm provision --hosts f[1-N] --after GATE`, 2 workers) and one `cm.launch` child `--after` all of "
    "them (1 worker on its own queue); the time from the newest parent `finished_ms` to the child's "
    "`started_ms`: the release query over N parents in the last parent's commit, the outbox publish, "
    "the delivery and the child's STARTED commit. A fresh store (and PostgreSQL database) per run.",
    "- The machine is shared: other work running at the same time shows as \"other\" CPU in the "
    "profile tables and slows every figure, cm's and Celery's alike.",
    "- Targets that compare two figures (throughput against the ceiling, events on against off, the "
    "round trips, command jobs against the bare loop) take the median of the runs' own ratios: each run "
    "measures both seconds apart, and this machine's speed drifts by a third from one minute to the "
    "next, which moves a ratio of medians (the table's ratio column) more than it moves a pair.",
]


def write(run, elapsed):
    measured = run.measured
    R = measured.results
    mach, ver = machine(), versions(run)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "smoke (tiny sizes, not a measurement)" if run.args.smoke else "full"
    L = ["# Benchmarks: cm vs Celery 5", "",
         f"Written by `bash bench/run.sh{' --smoke' if run.args.smoke else ''}` (`make bench`) on {now}; "
         f"mode {mode}; every figure repeated {run.repeat}x (`BENCH_REPEAT`), cm and Celery alternating "
         f"on the same broker; whole run {elapsed:.0f} s. Median, min and max over the runs; the ratio "
         "column is cm's median over Celery's (or over the row named).", "",
         "## Machine and versions", ""]
    L += [f"- {k}: {v}" for k, v in mach.items()]
    L += [f"- {k}: {v}" for k, v in ver.items()]
    L += ["", "## Results", "",
          "| Fig | What | Unit | Median | Min | Max | Runs | cm/Celery |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    L += rows(measured, run.sizes)
    if not measured.web:
        L += ["", "Figure 6: `cm web` (db_stats) is not in this build, so the first page is measured as "
              "`cm jobs` (the same newest-first page of 50 plus the total count, including process "
              "start-up) against a store seeded with the jobs by direct SQL insert."]
    if R.get("rss.cm") and R.get("anon.cm"):
        rss, anon, pss = median(R["rss.cm"]), median(R["anon.cm"]), median(R.get("pss.cm", []))
        L += ["", f"Figure 3: a cm worker's {rss:.1f} MiB RSS is {anon:.1f} MiB of its own (heap, stacks, "
              f"SQLite page cache) and {rss - anon:.1f} MiB of file pages, mostly the binary, which all workers "
              f"share: PSS, which splits each shared page between the processes mapping it, is {pss:.1f} MiB "
              "with 4 running, and what one more worker adds tends to its own memory. The target is judged "
              "on PSS."]
    L += ["", "## Targets", "", "| Target | Measured | Goal | |", "| --- | --- | --- | --- |"] + targets(measured)
    L += throughput_time.section(run)
    L += ["", "## Exact commands", "",
          "`$TMP` is the run's temp dir (one `fabfile.toml` per stack, `[simulation] step_seconds = [0, 0]`, "
          f"`concurrency = 1`; prefetch {TPUT_PREFETCH} in the throughput and drain stacks (`tput-*`, `drain-*`) "
          "but `tput-sqlite_p4-*`, which keeps the default 4; Celery's throughput workers get "
          f"`worker_prefetch_multiplier = {TPUT_PREFETCH}` alike), `$RUN` the run's unique name (queues, Celery node hosts, "
          "PostgreSQL databases); `celery` is bench/.venv's, run with `PYTHONPATH=bench` "
          "(`bench/celery_app.py`).", "", "```"]
    L += [f"[{k}] {v}" for k, v in sorted(measured.commands.items())]
    L += ["```", "", "## Method", ""] + METHOD + [""]
    with open(run.args.out, "w") as f:
        f.write("\n".join(L))

"""Figure 10, workflows (issue 29). (a) A chain of 10 no-op steps, first publish to last result:
cm's native `--after` chain on one idle worker beside Celery's own `chain` on one solo worker
with the rpc:// backend, alternating run by run. (b) A fan-in of N parents (1,000) and one child
`--after` them all: the time from the last parent's end to the child's start, from the store's
timestamps, on SQLite and PostgreSQL.

cm's steps are all published before the first may run: each chain (and each fan-in) waits
`--after` a gate job (`bench.gate`, a command that returns once the driver creates a file, which
it does after the last publish), so that the clock starts at the gate's end, when the whole
workflow is in the store, as a Celery chain is in its first message. The gate's end is the
commit that releases the first step; its timestamps and the steps' are the store's
(`cm jobs --json`)."""

import json
import os
import sys
import time

from .. import broker, postgres, stack
from ..celery_multi import CeleryWorkers
from ..run import die
from ..settings import RECIPE, SERVER

STEPS = 10
# The gate job's program: returns once its file exists.
GATE_CODE = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.001)"


def gate_task(run, stack_name):
    """The `commands` of a stack (`bench.gate`'s argv), and the file that opens its gates."""
    path = os.path.join(run.tmp, stack_name, "gate")
    return {"bench.gate": [sys.executable, "-c", GATE_CODE, path]}, path


class Gate:
    """A gate job on stack `s`: published shut, opened by creating its file."""

    def __init__(self, s, path):
        if os.path.exists(path):
            os.remove(path)
        self.path = path
        self.id = published_id(s.cm("call", "bench.gate", label="10 cm call bench.gate (the gate)"))

    def open(self):
        open(self.path, "w").close()


def measure(run):
    from celery import Celery, chain

    m = run.measured
    q_cm, q_celery = f"{run.name}_chain", f"{run.name}_chaincelery"
    run.queues.append(q_celery)
    gate_cmds, gate_file = gate_task(run, "chain")
    s = stack.create(run, "chain", [(q_cm, ["ch1"], ["cm.provision", "bench.gate"])], commands=gate_cmds)
    s.cm("queue", "start", label="10 cm queue start (chain)")
    celery = CeleryWorkers(run, "celery-chain", [f"chain@{run.host}"], ["-P", "solo", "-Q", q_celery],
                           env={"BENCH_RESULT_BACKEND": "rpc://"})
    celery.start(label="10 celery worker (chain)")
    client = Celery("cm_bench_chain", broker=run.celery_broker, backend="rpc://")
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    m.commands.setdefault(
        "10 celery chain", f"python: chain(*[signature('bench.noop', queue=Q)] * {STEPS}).apply_async()"
        ".get(timeout=60), client backend rpc://")

    def celery_chain():
        steps = [client.signature("bench.noop", options={"queue": q_celery}) for _ in range(STEPS)]
        t0 = time.perf_counter()
        chain(*steps).apply_async().get(timeout=60)
        return 1000 * (time.perf_counter() - t0)

    if not run.args.smoke:
        celery_chain()  # untimed warm-up
    chains = run.sizes["chains"]
    for i in range(run.repeat):
        run.log(f"workflows, run {i + 1}/{run.repeat}: {chains} chains of {STEPS} steps, cm and Celery")
        broker.settle(run)
        for side in (("cm", "celery") if i % 2 == 0 else ("celery", "cm")):
            for _ in range(chains):
                m.add(f"chain.{side}", cm_chain(run, s, gate_file) if side == "cm" else celery_chain())
    s.cm("server", "stop", label="10 cm server stop")
    celery.kill()

    # The smoke run (make test) keeps to SQLite: the PostgreSQL fan-in is the same code with
    # another store URL, and its database and stack would double the figure's share of the smoke.
    pg_missing = "not measured by --smoke" if run.args.smoke else postgres.missing(run)
    if pg_missing:
        m.notes["fanin.pg"] = pg_missing if run.args.smoke else f"skipped: {pg_missing}"
    for i in range(run.repeat):
        run.log(f"workflows, run {i + 1}/{run.repeat}: fan-in of {run.sizes['fanin']}, SQLite")
        fan_in(run, i, "sqlite")
        if not pg_missing:
            run.log(f"workflows, run {i + 1}/{run.repeat}: fan-in of {run.sizes['fanin']}, PostgreSQL")
            name, url = postgres.create(run, f"f{i}")
            fan_in(run, i, "pg", url)
            postgres.drop(run, name)


def published_id(ran):
    """The one id a publishing command printed (`ran`: what `CmStack.cm` returns)."""
    ids = ran[1].stdout.split()
    if len(ids) != 1:
        die(f"expected one job id, got: {out.stdout[:200]!r}")
    return ids[0]


def jobs_by_id(s):
    _, out = s.cm("jobs", "--json", "--limit", "0", label="10 cm jobs")
    return {j["id"]: j for j in json.loads(out.stdout)}


def wait_final(run, s, ids, limit_s=120):
    """Until every job of `ids` is final; their rows."""
    deadline = time.time() + limit_s
    while True:
        jobs = jobs_by_id(s)
        rows = [jobs.get(i) for i in ids]
        if all(r and r["state"] in ("SUCCESS", "FAILURE", "REVOKED") for r in rows):
            bad = [r for r in rows if r["state"] != "SUCCESS"]
            if bad:
                die(f"workflow job {bad[0]['id']} ended {bad[0]['state']}: {bad[0].get('error')}")
            return rows
        if time.time() > deadline:
            die(f"workflow jobs not final after {limit_s} s")
        time.sleep(0.2)


def gated(run, rows, gate):
    """The gate's end in ms, once sure every job of `rows` was stored before it."""
    late = [r for r in rows if r["submitted_ms"] > gate["finished_ms"]]
    if late:
        die(f"{len(late)} workflow jobs were stored after their gate ended")
    return gate["finished_ms"]


def cm_chain(run, s, gate_file):
    """One native chain behind a gate: the gate's end to the last step's end, in ms."""
    gate = Gate(s, gate_file)
    prev, steps = gate.id, []
    for _ in range(STEPS):
        argv = ["call", "cm.provision", "--args", '["h", "i"]', "--after"]
        run.note_cmd("10 cm call --after (chain step)", [run.args.cm, "--config", s.path, *argv, "PREVIOUS_STEP"])
        prev = published_id(s.cm(*argv, prev))
        steps.append(prev)
    gate.open()
    rows = wait_final(run, s, [gate.id] + steps)
    start = gated(run, rows[1:], rows[0])
    return rows[-1]["finished_ms"] - start


def fan_in(run, i, kind, store_url=None):
    """N parents released at once by a gate, one child after them all: last parent's end to the
    child's start, in ms."""
    m = run.measured
    q_prov, q_launch = f"{run.name}_fp{kind}{i}", f"{run.name}_fl{kind}{i}"
    name = f"fanin-{kind}-{i}"
    gate_cmds, gate_file = gate_task(run, name)
    s = stack.create(run, name, [(q_prov, ["fp1", "fp2"], ["cm.provision", "bench.gate"]),
                                 (q_launch, ["fl1"], ["cm.launch"])], store_url, commands=gate_cmds)
    s.cm("queue", "start", label=f"10 cm queue start (fan-in, {kind})")
    broker.settle(run)
    n = run.sizes["fanin"]
    gate = Gate(s, gate_file)
    argv = ["provision", "--hosts", f"f[1-{n}]", "--image", "i", "--after"]
    run.note_cmd(f"10 cm provision --after GATE (the {n} parents)", [run.args.cm, "--config", s.path, *argv, "GATE"])
    _, out = s.cm(*argv, gate.id)
    parents = out.stdout.split()
    if len(parents) != n:
        die(f"cm provision printed {len(parents)} ids, not {n}")
    argv = ["launch", "--server", SERVER, "--recipe", RECIPE, "--hosts", "x", "--after"]
    run.note_cmd("10 cm launch --after PARENTS (the child)", [run.args.cm, "--config", s.path, *argv, "$PARENTS"])
    child = published_id(s.cm(*argv, " ".join(parents)))
    gate.open()
    rows = wait_final(run, s, [gate.id, child] + parents)
    gated(run, rows[1:], rows[0])
    last_parent = max(r["finished_ms"] for r in rows[2:])
    m.add(f"fanin.{kind}", rows[1]["started_ms"] - last_parent)
    s.cm("server", "stop", label=f"10 cm server stop (fan-in, {kind})")

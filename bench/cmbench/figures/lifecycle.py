"""Figures 1-3: starting and stopping 4 workers, and their memory, cm against `celery multi`."""

from .. import stack
from ..celery_multi import CeleryWorkers
from ..procfs import memory_mib
from ..run import die


def measure(run):
    m = run.measured
    s = stack.create(run, "lifecycle", [(f"{run.name}_prov", ["p1", "p2"], ["cm.provision"]),
                                        (f"{run.name}_launch", ["l1", "l2"], ["cm.launch"])])
    run.queues += [f"{run.name}_cprov", f"{run.name}_claunch", f"{run.name}_csolo"]
    nodes = [f"{n}@{run.host}" for n in ("p1", "p2", "l1", "l2")]
    opts = ["-c", "1", "-Q:1,2", f"{run.name}_cprov", "-Q:3,4", f"{run.name}_claunch"]
    celery = CeleryWorkers(run, "celery-lifecycle", nodes, opts)
    solo = CeleryWorkers(run, "celery-solo", [f"s1@{run.host}"], ["-P", "solo", "-Q", f"{run.name}_csolo"])

    def add_memory(who, pid):
        for k, v in memory_mib(pid).items():
            m.add(f"{k}.{who}", v)

    # Untimed warm-up: the first start creates cm's SQLite store; the page cache gets Python's
    # modules and cm's binary; neither is what an operator waits for on a running system.
    run.log("warm-up start/stop (cm, Celery)")
    s.cm("queue", "start")
    s.cm("server", "stop")
    if not run.args.smoke:
        celery.start()
        celery.multi("stopwait")
    for i in range(run.repeat):
        run.log(f"start/stop/memory, run {i + 1}/{run.repeat}")
        dt, _ = s.cm("queue", "start", label="1 cm")
        m.add("start.cm", dt)
        for pid in s.pids():
            add_memory("cm", pid)
        if len(s.pids()) != 4:
            die(f"expected 4 cm workers, found {s.pids()}")
        dt, _ = s.cm("server", "stop", label="2 cm")
        m.add("stop.cm", dt)

        dt = celery.start(label="1 celery")
        m.add("start.celery", dt)
        pids = celery.pids()
        if len(pids) != 4:
            die(f"expected 4 Celery workers, found {pids}")
        for pid in pids:
            add_memory("celery_prefork", pid)
        dt, _ = celery.multi("stopwait", label="2 celery")
        m.add("stop.celery", dt)

        solo.start(label="3 celery solo")
        for pid in solo.pids():
            add_memory("celery_solo", pid)
        solo.kill()  # its stop is not a figure; stopwait would cost ~10 s a run

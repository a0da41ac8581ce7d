"""Figure 7, one job at a time: `cm provision/call --wait` of one job (whole command), and a
Python Celery client's `send_task(...).get()` over rpc:// to a cm worker and to a Celery worker
(solo pool, no-op task), one after another, alternating run by run."""

import time

from .. import broker, stack
from ..celery_multi import CeleryWorkers
from ..measurements import median


def measure(run):
    from celery import Celery

    m = run.measured
    q_cm, q_celery = f"{run.name}_lat", f"{run.name}_latcelery"
    run.queues.append(q_celery)
    s = stack.create(run, "latency", [(q_cm, ["lat1"], ["cm.provision"])])
    s.cm("queue", "start", label="cm queue start")
    celery = CeleryWorkers(run, "celery-latency", [f"lat@{run.host}"], ["-P", "solo", "-Q", q_celery],
                           env={"BENCH_RESULT_BACKEND": "rpc://"})
    celery.start(label="celery (round trips)")
    client = Celery("cm_bench_client", broker=run.celery_broker, backend="rpc://")
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    n, trips = run.sizes["one_job"], run.sizes["round_trips"]
    m.commands.setdefault(
        "round trips", f"python: client.send_task('cm.provision', args=['h', 'i'], queue=Q).get(timeout=30), "
        f"{trips} one after another per run (10 untimed first), client backend rpc://")

    def round_trips(queue, key):
        for _ in range(10):
            client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
        ts = []
        for _ in range(trips):
            t0 = time.perf_counter()
            client.send_task("cm.provision", args=["h", "i"], queue=queue).get(timeout=30)
            ts.append(1000 * (time.perf_counter() - t0))
        ts.sort()
        m.add(f"rtt.{key}.p50", median(ts))
        m.add(f"rtt.{key}.p99", ts[min(len(ts) - 1, int(0.99 * len(ts)))])

    for i in range(run.repeat):
        run.log(f"latency, run {i + 1}/{run.repeat}: one job --wait, Python round trips")
        broker.settle(run)
        for _ in range(n):
            dt, _ = s.cm("provision", "--hosts", "x1", "--image", "i", "--wait", "--quiet",
                         label="cm provision --wait (one job)")
            m.add("lat.provision", 1000 * dt)
        for _ in range(n):
            dt, _ = s.cm("call", "cm.provision", "--args", '["h", "i"]', "--wait", "--quiet",
                         label="cm call --wait (one job)")
            m.add("lat.call", 1000 * dt)
        for queue, key in ([(q_cm, "cm"), (q_celery, "celery")] if i % 2 == 0
                           else [(q_celery, "celery"), (q_cm, "cm")]):
            round_trips(queue, key)
    celery.kill()

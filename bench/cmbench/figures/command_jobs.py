"""Figure 8: N jobs of /bin/true on 4 workers with concurrency 2 (8 at once): cm
(`cm call bench.true --count N --wait`), Celery (a task that calls `subprocess.run(["/bin/true"])`,
4 prefork workers `-c 2`, counted by a done-file), pueue (`pueue add` N times, 8 in parallel, then
`pueue wait`) where installed, and a bare loop that spawns /bin/true N times, 8 at once
(`xargs -P 8`): the machine's limit."""

import os
import shutil
import subprocess
import time

from .. import broker, stack
from ..celery_multi import CeleryWorkers, send


def measure(run):
    m = run.measured
    n = run.sizes["command_jobs"]
    q = f"{run.name}_cmd"
    s = stack.create(run, "commands", [(q, ["c1", "c2", "c3", "c4"], ["bench.true"])], prefetch=64, concurrency=2)
    s.cm("queue", "start", label="cm queue start")
    cq = f"{run.name}_cmdcelery"
    run.queues.append(cq)
    nodes = [f"c{k}@{run.host}" for k in range(1, 5)]
    celery = CeleryWorkers(run, "celery-commands", nodes, ["-c", "2", "-Q", cq], done_file=True, queue=cq)
    celery.start(label="4 celery -c 2 (command jobs)")
    m.commands.setdefault("8 celery", f"python: app.send_task('bench.true', queue=Q) x {n}, then wait until "
                          "the done-file has N bytes")
    bare = ["bash", "-c", f"seq {n} | xargs -P 8 -n 1 /bin/true"]
    pueue = pueue_start(run)
    for i in range(run.repeat):
        run.log(f"command jobs, run {i + 1}/{run.repeat}: {n} x /bin/true, cm, Celery, bare loop")
        broker.settle(run)
        dt, _ = s.cm("call", "bench.true", "--count", str(n), "--wait", "--quiet", "--timeout", "900",
                     label="8 cm")
        m.add("cmd.cm", n / dt)
        broker.settle(run)
        os.truncate(celery.done, 0)
        t0 = time.perf_counter()
        send(run.app, "bench.true", celery.queue, n)
        celery.wait_done(n, t0)
        m.add("cmd.celery", n / (time.perf_counter() - t0))
        broker.settle(run)
        dt, _ = run.sh(bare, label="8 bare loop")
        m.add("cmd.bare", n / dt)
        # One run only: pueued saves its whole state on every `pueue add`, so 2,000 adds take
        # minutes (the 5-run bench went past its 10-minute budget with two).
        if pueue and i == 0:
            broker.settle(run)
            run.sh(pueue + ["clean"])
            t0 = time.perf_counter()
            for _ in range(n):
                run.sh(pueue + ["add", "--", "/bin/true"], label="8 pueue add")
            run.sh(pueue + ["wait"], label="8 pueue wait")
            m.add("cmd.pueue", n / (time.perf_counter() - t0))
    celery.kill()
    if pueue:
        run.sh(pueue + ["shutdown"], check=False)


def pueue_start(run):
    """A pueue daemon of the run's own (its own directory and socket), 8 tasks at once; the
    client's argv, or None where pueue is not installed (then the row says so)."""
    found = shutil.which("pueue") or os.path.expanduser("~/.cargo/bin/pueue")
    daemon = shutil.which("pueued") or os.path.expanduser("~/.cargo/bin/pueued")
    if not (os.access(found, os.X_OK) and os.access(daemon, os.X_OK)):
        return None
    d = os.path.join(run.tmp, "pueue")
    os.makedirs(d)
    cfg = os.path.join(d, "pueue.yml")
    with open(cfg, "w") as f:
        f.write(f"shared:\n  pueue_directory: {d}\n  runtime_directory: {d}\n  use_unix_socket: true\n"
                f"  unix_socket_path: {d}/pueue.socket\ndaemon:\n  default_parallel_tasks: 8\n")
    client = [found, "-c", cfg]
    # In the foreground, as a child of the run's own: `pueued -d` forks a daemon that keeps
    # the driver's output pipes open, and cleanup kills it like the run's other processes.
    run.note_cmd("8 pueued", [daemon, "-c", cfg])
    run.started_procs.append(subprocess.Popen([daemon, "-c", cfg], env=run.env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True))
    deadline = time.perf_counter() + 30
    while run.sh(client + ["status"], check=False)[1].returncode != 0:
        if time.perf_counter() > deadline:
            run.measured.notes["cmd.pueue"] = "not measured: pueued did not answer within 30 s"
            return None
        time.sleep(0.1)
    run.sh(client + ["parallel", "8"], label="8 pueue parallel")
    return client

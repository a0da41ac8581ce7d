"""Figure 5: `cm queue start` and `cm server stop` of 4 queues with more and more workers each,
and their memory."""

from .. import stack
from ..procfs import rss_kb
from ..run import die


def measure(run):
    m = run.measured
    letters = "abcd"
    stacks = {}
    for k in run.sizes["scale"]:
        stacks[k] = stack.create(run, f"scale-{k}", [
            (f"{run.name}_s{k}{c}", [f"{c}{j}" for j in range(1, k + 1)], [f"bench.{c}"]) for c in letters])
        stacks[k].cm("queue", "start")  # untimed warm-up: creates the store
        stacks[k].cm("server", "stop")
    for i in range(run.repeat):
        for k, s in stacks.items():
            w = 4 * k
            run.log(f"scale, run {i + 1}/{run.repeat}: {w} workers")
            dt, _ = s.cm("queue", "start", label=f"5 cm {w}")
            m.add(f"scale.start.{w}", dt)
            pids = s.pids()
            if len(pids) != w:
                die(f"expected {w} workers, found {len(pids)}")
            total = sum(rss_kb(p) for p in pids) / 1024
            m.add(f"scale.rss_total.{w}", total)
            m.add(f"scale.rss_each.{w}", total / w)
            dt, _ = s.cm("server", "stop", label=f"5 cm {w} stop")
            m.add(f"scale.stop.{w}", dt)

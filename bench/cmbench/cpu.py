"""CPU seconds by process group over a timed run (CpuMeter), and how the report sums them up."""

import os
import resource
import time

from .measurements import median
from .procfs import TICK, cpu_ticks, machine_busy_ticks


def cores():
    return len(os.sched_getaffinity(0))


class CpuMeter:
    """CPU seconds spent by groups of processes between start() and stop()."""

    def __init__(self, groups):
        self.groups = groups  # name -> callable returning pids

    def start(self):
        self.t0 = time.perf_counter()
        self.busy0 = machine_busy_ticks()
        self.before = {}
        for name, fn in self.groups.items():
            self.before[name] = {p: cpu_ticks(p) for p in fn()}
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self, extra=None):
        wall = time.perf_counter() - self.t0
        out = {}
        for name, fn in self.groups.items():
            ticks = 0
            for p in set(fn()) | set(self.before[name]):
                now = cpu_ticks(p)
                if now:
                    ticks += now - self.before[name].get(p, 0)
            out[name] = ticks / TICK
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["bench driver"] = (ru.ru_utime + ru.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime)
        for k, v in (extra or {}).items():
            out[k] = v
        busy = (machine_busy_ticks() - self.busy0) / TICK
        out["other (whole machine minus the above)"] = max(0.0, busy - sum(out.values()))
        return {"wall": wall, "busy": busy, "cpu": out}


def cpu_groups(profs):
    """The median CPU seconds of each group over several CpuMeter results."""
    groups = {}
    for p in profs:
        for k, v in p["cpu"].items():
            groups.setdefault(k, []).append(v)
    return {k: median(v) for k, v in groups.items()}


def cpu_text(profs):
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu_groups(profs).items() if v >= 0.005)

"""What /proc says about processes: their trees, memory and CPU ticks, and the machine's."""

import glob
import os

TICK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_kb(pid):
    """Pss and Anonymous (kB) from /proc/PID/smaps_rollup."""
    out = {"Pss": 0, "Anonymous": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in out:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def children(pid):
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid):
    pids = [pid]
    for c in children(pid):
        pids += tree(c)
    return pids


def tree_rss_kb(pid):
    return sum(rss_kb(p) for p in tree(pid))


def memory_mib(pid):
    """RSS, PSS and anonymous memory of a process and its children, in MiB."""
    pids = tree(pid)
    sm = [smaps_kb(p) for p in pids]
    return {"rss": sum(rss_kb(p) for p in pids) / 1024, "pss": sum(x["Pss"] for x in sm) / 1024,
            "anon": sum(x["Anonymous"] for x in sm) / 1024}


def cpu_ticks(pid):
    """utime + stime of a live process, in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def pids_named(comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def machine_busy_ticks():
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts[:8]) - idle


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def live_pids(paths):
    """The live processes named by these pid files; a missing or stale file is skipped."""
    out = []
    for path in paths:
        try:
            with open(path) as f:
                pid = int(f.read().strip())
            if alive(pid):
                out.append(pid)
        except (OSError, ValueError):
            pass
    return out

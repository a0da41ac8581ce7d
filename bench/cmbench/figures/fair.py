"""Figure 12, fair dispatch (issue 31): one long job, then 8 quick ones, on two workers of one
queue with the shipped defaults (concurrency 1, prefetch 4). The quick jobs' latency, from each
job's submit time to its STARTED time in the store (`cm jobs --json`); the worst of the 8 per run.
cm as shipped (a worker whose every slot stays busy 50 ms hands its prefetched jobs back to the
queue) beside the same stack with `hand_back_after_ms = 0`, which is what any prefetching worker
does: the quick jobs it was handed wait behind its long one while the other worker is idle. The
20,000-job throughput figure (1) is the check that millisecond jobs lost nothing."""

import json
import time

from .. import broker, stack

QUICK = 8


def measure(run):
    m = run.measured
    long_s = run.sizes["fair_long_seconds"]
    commands = {"t.long": ["/bin/sleep", str(long_s)], "t.quick": ["/bin/true"]}
    sides = {}
    for side, keys in (("cm", None), ("off", "hand_back_after_ms = 0")):
        q = f"{run.name}_fair_{side}"
        sides[side] = stack.create(run, f"fair-{side}", [(q, ["fa1", "fa2"], ["t.long", "t.quick"])],
                                   commands=commands, queue_keys=keys)
    for i in range(run.repeat):
        run.log(f"fair dispatch, run {i + 1}/{run.repeat}: a {long_s} s job then {QUICK} quick ones, "
                "hand back on, then off (or back)")
        for side in (("cm", "off") if i % 2 == 0 else ("off", "cm")):
            broker.settle(run)
            lat = one_run(run, sides[side], long_s, side)
            if lat:
                m.add(f"fair.{side}.worst", max(lat))
                m.add(f"fair.{side}.median", sorted(lat)[len(lat) // 2])


def state(s, job_id):
    _, out = s.cm("jobs", "show", job_id, "--json", check=False)
    try:
        return json.loads(out.stdout).get("state")
    except ValueError:
        return None


def one_run(run, s, long_s, side):
    s.cm("queue", "start", label="12 cm queue start")
    try:
        return quick_latencies(run, s, long_s, side)
    finally:
        s.cm("server", "stop", label="12 cm server stop")


def quick_latencies(run, s, long_s, side):
    """Starts the long job, then the quick ones: their submit-to-STARTED times (ms)."""
    _, out = s.cm("call", "t.long", label="12 cm call t.long")
    long_id = out.stdout.split()[0]
    deadline = time.time() + 30
    while state(s, long_id) != "STARTED":
        if time.time() > deadline:
            run.measured.notes[f"fair.{side}.worst"] = "not measured: the long job did not start in 30 s"
            return []
        time.sleep(0.02)
    ids = set()
    for _ in range(QUICK):
        _, out = s.cm("call", "t.quick", label="12 cm call t.quick")
        ids.add(out.stdout.split()[0])
    deadline = time.time() + long_s + 30
    while True:
        _, out = s.cm("jobs", "--json", "--limit", "0", label="12 cm jobs")
        jobs = [j for j in json.loads(out.stdout) if j["id"] in ids]
        lat = [j["started_ms"] - j["submitted_ms"] for j in jobs if j.get("started_ms") is not None]
        if len(lat) == QUICK or time.time() > deadline:
            return lat
        time.sleep(0.2)

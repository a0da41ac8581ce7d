"""What a run measured, kept for the report: every figure writes here, the report only reads."""

import statistics


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Measurements:
    def __init__(self):
        self.results = {}  # key -> list of floats
        self.notes = {"cmd.pueue": "not measured: pueue is not installed (`cargo install pueue`)"}  # key -> text
        self.commands = {}  # label -> command line (first time it ran)
        self.profiles = {}  # key -> list of CpuMeter results
        self.phases = {}  # key -> list of (publish_s, total_s, last_final_s)
        self.perf = None  # the perf profile (a dict), or why there is none (a str)
        # (updates of jobs, of them HOT, jobs' indexes) per PostgreSQL throughput run.
        self.pg_stats = []
        self.drain = {}
        self.web = False  # whether this build has `cm web` (figure 6's rows)

    def add(self, key, value):
        self.results.setdefault(key, []).append(value)

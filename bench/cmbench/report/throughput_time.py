"""The section "Where cm's throughput time goes": figure 4's phases, CPU by process group, the
producer alone and the workers alone, the findings, and the perf profile."""

from ..cpu import cores, cpu_text
from ..figures.profiles import PERF_PARTS
from ..measurements import median
from .findings import findings


def section(run):
    m = run.measured
    L = ["", "## Where cm's throughput time goes", ""]
    if not m.phases:
        return L + ["(no throughput runs)"]
    names = {"sqlite": "cm, SQLite", "sqlite_ev": "cm, SQLite, task events on", "sqlite_p4": "cm, SQLite, default prefetch 4", "pg": "cm, PostgreSQL", "celery": "Celery (publish = send_task loop)",
             "raw": "raw ceiling", "raw_celery": "raw ceiling, cm's messages"}
    L += ["End-to-end runs of figure 4, medians. Publish: until `cm launch` printed the ids (PENDING rows "
          "stored, every publish confirmed); last final: the newest `finished_ms` in the store; total: until "
          "the command exited (seconds from the start).", "",
          "| Run | Publish s | Last final s | Total s | Jobs/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind, xs in m.phases.items():
        pub = median([x[0] for x in xs])
        tot = median([x[1] for x in xs])
        lasts = [x[2] for x in xs if x[2] is not None]
        last = f"{median(lasts):.2f}" if lasts else ""
        n = run.sizes["raw_jobs" if kind.startswith("raw") else "celery_jobs" if kind == "celery" else "cm_jobs"]
        L.append(f"| {names.get(kind, kind)} | {pub:.2f} | {last} | {tot:.2f} | {n / tot:,.0f} |")
    L += ["", f"CPU seconds per process group during those runs (medians; {cores()} cores, so at most "
          f"{cores()} x wall; \"other\" is everything else on the machine, e.g. other builds):", "",
          "| Run | Wall s | Machine busy CPU-s | CPU-s by group |", "| --- | ---: | ---: | --- |"]
    for kind, profs in m.profiles.items():
        L.append(f"| {names.get(kind, kind)} | {median([p['wall'] for p in profs]):.2f} | "
                 f"{median([p['busy'] for p in profs]):.2f} | {cpu_text(profs)} |")
    d = m.drain
    if d:
        L += ["", f"The producer alone and the workers alone ({d['jobs']:,} jobs published with no worker "
              "running, then drained by 1 or by 4 workers; Celery: consumers cancelled while publishing):", "",
              "| Store | Publish only, jobs/s | Drain, 1 worker, jobs/s | Drain, 4 workers, jobs/s | "
              "CPU-s by group, 4-worker drain |", "| --- | ---: | ---: | ---: | --- |"]
        for kind in ("sqlite", "pg"):
            if f"drain.{kind}.4" in d:
                L.append(f"| cm, {names[kind][4:]} | {d[f'publish.{kind}.4']:,.0f} | {d[f'drain.{kind}.1']:,.0f} | "
                         f"{d[f'drain.{kind}.4']:,.0f} | {cpu_text([d[f'cpu.{kind}.4']])} |")
        if "drain.celery" in d:
            L.append(f"| Celery, no backend | {d['publish.celery']:,.0f} | | {d['drain.celery']:,.0f} | |")
    L += ["", "Findings:", ""] + findings(run)
    if isinstance(m.perf, dict):
        p = m.perf
        L += ["", f"`perf record --call-graph dwarf -p <the 4 workers>` over one more end-to-end SQLite run of "
              f"figure 4 ({run.sizes['cm_jobs']:,} jobs, untimed): the workers' CPU by thread (`{p['main']}` is "
              "the worker's tokio runtime, which also runs its SQLite writes; `lapin-io-loop` is the broker "
              "connection's I/O, `cm-checkpoint` checkpoints the WAL), then by what the runtime thread was "
              "doing (inclusive: a part's callees count in it):", "", "| Part | Share of the workers' CPU |",
              "| --- | ---: |"]
        L += [f"| thread `{name}` | {100 * x:.1f}% |" for x, name in p["threads"]]
        L += [f"| {what} | {100 * p['parts'][key]:.1f}% |" for key, what, _ in PERF_PARTS]
    elif m.perf:
        L += ["", f"(perf: {m.perf})"]
    return L

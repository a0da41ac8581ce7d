"""The Results table: a row per figure's line, its median, min, max and runs, and cm's ratio."""

from ..measurements import median


def rows(measured, sz):
    """The table's rows in figure order; a row measured by no run says why (or "not measured")."""
    R = measured.results
    out = []

    def row(fig, what, unit, key, ratio_to=None, fmt="{:.3f}", ratio_note=""):
        xs = R.get(key, [])
        if not xs:
            out.append(f"| {fig} | {what} | {unit} | {measured.notes.get(key, 'not measured')} | | | 0 | |")
            return
        ratio = ""
        if ratio_to and R.get(ratio_to):
            ratio = f"{median(xs) / median(R[ratio_to]):.3f}{ratio_note}"
        out.append(f"| {fig} | {what} | {unit} | {fmt.format(median(xs))} | {fmt.format(min(xs))} | "
                    f"{fmt.format(max(xs))} | {len(xs)} | {ratio} |")

    row(1, "cm queue start (4 workers, returns when all consume)", "s", "start.cm", "start.celery")
    row(1, "celery multi start p1 p2 l1 l2 -c 1, until all 4 answer ping", "s", "start.celery")
    row(2, "cm server stop (4 idle workers)", "s", "stop.cm", "stop.celery")
    row(2, "celery multi stopwait (4 idle workers)", "s", "stop.celery")
    row(3, "cm worker RSS, idle", "MiB", "rss.cm", "rss.celery_solo", "{:.1f}", " (vs solo)")
    row(3, "Celery worker RSS, idle, -P solo", "MiB", "rss.celery_solo", fmt="{:.1f}")
    row(3, "Celery worker RSS, idle, prefork -c 1 (parent + child)", "MiB", "rss.celery_prefork", fmt="{:.1f}")
    row(3, "cm worker PSS, idle (shared pages split between the 4)", "MiB", "pss.cm", "pss.celery_solo", "{:.1f}",
        " (vs solo)")
    row(3, "Celery worker PSS, idle, -P solo", "MiB", "pss.celery_solo", fmt="{:.1f}")
    row(3, "Celery worker PSS, idle, prefork -c 1 (parent + child)", "MiB", "pss.celery_prefork", fmt="{:.1f}")
    row(3, "cm worker anonymous memory (heap, stacks), idle", "MiB", "anon.cm", "anon.celery_solo", "{:.1f}",
        " (vs solo)")
    row(3, "Celery worker anonymous memory, idle, -P solo", "MiB", "anon.celery_solo", fmt="{:.1f}")
    row(3, "cm worker RSS after the SQLite throughput run", "MiB", "rss_load.cm_sqlite", "rss_load.celery_prefork",
        "{:.1f}", " (vs prefork)")
    row(3, "Celery worker RSS after its throughput run, prefork -c 1", "MiB", "rss_load.celery_prefork", fmt="{:.1f}")
    row(4, f"cm, SQLite store: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s", "tput.cm_sqlite",
        "tput.celery", "{:,.0f}")
    row(4, f"cm, PostgreSQL store: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s", "tput.cm_pg",
        "tput.celery", "{:,.0f}")
    row(4, f"cm, SQLite store, Celery task events on (send_events): {sz['cm_jobs']:,} jobs, 4 workers, "
        "launch --wait", "jobs/s", "tput.cm_sqlite_ev", "tput.cm_sqlite", "{:,.0f}",
        " (vs events off)")
    row(4, f"cm, SQLite store, default prefetch 4: {sz['cm_jobs']:,} jobs, 4 workers, launch --wait", "jobs/s",
        "tput.cm_sqlite_p4", "tput.celery", "{:,.0f}")
    row(4, f"Celery: {sz['celery_jobs']:,} no-op tasks, 4 workers -c 1, no result backend", "jobs/s",
        "tput.celery", fmt="{:,.0f}")
    row(4, f"raw ceiling: {sz['raw_jobs']:,} msgs, lapin, 1 publisher (confirms) + 1 consumer (acks)",
        "msgs/s", "tput.raw", fmt="{:,.0f}")
    row(4, f"raw ceiling with cm's messages (Celery protocol v2: 14 headers, a new task id each): "
        f"{sz['raw_jobs']:,} msgs, same pattern", "msgs/s", "tput.raw_celery", fmt="{:,.0f}")
    for k in sz["scale"]:
        w = 4 * k
        row(5, f"cm queue start, {w} workers ({k} per queue x 4 queues)", "s", f"scale.start.{w}")
        row(5, f"cm server stop, {w} workers", "s", f"scale.stop.{w}")
        row(5, f"cm RSS total, {w} workers", "MiB", f"scale.rss_total.{w}", fmt="{:.1f}")
        row(5, f"cm RSS per worker, {w} workers", "MiB", f"scale.rss_each.{w}", fmt="{:.1f}")
    row(5, "Celery reference, 4 workers: celery multi start until ping (= figure 1)", "s", "start.celery")
    row(5, "Celery reference, 4 workers: celery multi stopwait (= figure 2)", "s", "stop.celery")
    row(5, "Celery reference, 4 workers: RSS per prefork -c 1 worker (= figure 3)", "MiB", "rss.celery_prefork",
        fmt="{:.1f}")
    for n in sz["db_jobs"]:
        if measured.web:
            row(6, f"GET /cm/launch/db_stats, {n:,} jobs, SQLite", "ms", f"web.sqlite.{n}", fmt="{:.1f}")
            row(6, f"GET /cm/launch/db_stats, {n:,} jobs, PostgreSQL", "ms", f"web.pg.{n}", fmt="{:.1f}")
        row(6, f"cm jobs (whole process, first 50), {n:,} jobs, SQLite", "ms", f"page.sqlite.{n}", fmt="{:.1f}")
        row(6, f"cm jobs (whole process, first 50), {n:,} jobs, PostgreSQL", "ms", f"page.pg.{n}", fmt="{:.1f}")

    n1 = sz["one_job"]
    row(7, f"cm provision --wait, one job, whole command ({n1} per run)", "ms", "lat.provision",
        fmt="{:.1f}")
    row(7, f"cm call cm.provision --wait, one job, whole command ({n1} per run)", "ms", "lat.call",
        fmt="{:.1f}")
    trips = sz["round_trips"]
    row(7, f"Python send_task().get() over rpc:// to a cm worker, p50 of {trips}", "ms", "rtt.cm.p50",
        "rtt.celery.p50", "{:.2f}")
    row(7, f"Python send_task().get() over rpc:// to a cm worker, p99 of {trips}", "ms", "rtt.cm.p99",
        "rtt.celery.p99", "{:.2f}")
    row(7, f"Python send_task().get() over rpc:// to a Celery worker (solo, no-op), p50 of {trips}", "ms",
        "rtt.celery.p50", fmt="{:.2f}")
    row(7, f"Python send_task().get() over rpc:// to a Celery worker (solo, no-op), p99 of {trips}", "ms",
        "rtt.celery.p99", fmt="{:.2f}")

    nc = sz["command_jobs"]
    row(8, f"cm: {nc:,} jobs of /bin/true, 4 workers x concurrency 2, call --count --wait", "jobs/s", "cmd.cm",
        "cmd.celery", "{:,.0f}")
    row(8, f"Celery: {nc:,} tasks calling subprocess.run(['/bin/true']), 4 workers -c 2", "jobs/s", "cmd.celery",
        fmt="{:,.0f}")
    row(8, f"pueue: {nc:,} x pueue add /bin/true, parallel 8, pueue wait", "jobs/s", "cmd.pueue", fmt="{:,.0f}")
    row(8, f"bare loop: /bin/true {nc:,} times, 8 at once (xargs -P 8)", "jobs/s", "cmd.bare", fmt="{:,.0f}")

    ns = sz["schedule_seconds"]
    for p in ("p50", "p99"):
        row(9, f"cm schedule every = \"1s\", one idle worker: slot to job STARTED, {p} of {ns} slots", "ms",
            f"sched.cm.{p}", f"sched.celery.{p}", "{:.1f}")
    for p in ("p50", "p99"):
        row(9, f"celery beat schedule(1 s, relative=True), one solo worker: slot to task start, {p} of {ns} "
            "slots", "ms", f"sched.celery.{p}", fmt="{:.1f}")
    row(9, f"cm: slots of the {ns} s window whose job started", "%", "sched.cm.fired", fmt="{:.0f}")
    row(9, f"celery beat: slots of the {ns} s window whose task started", "%", "sched.celery.fired", fmt="{:.0f}")

    nch = sz["chains"]
    row(10, f"cm: chain of 10 no-op steps (--after), one idle worker: gate's end to the last step's end "
        f"({nch} chains per run)", "ms", "chain.cm", "chain.celery", "{:.1f}")
    row(10, f"Celery: chain of 10 no-op tasks, one solo worker, rpc://: apply_async() to .get() "
        f"({nch} chains per run)", "ms", "chain.celery", fmt="{:.1f}")
    nf = sz["fanin"]
    row(10, f"cm: fan-in of {nf:,} parents, SQLite: last parent's end to the child's start", "ms", "fanin.sqlite",
        fmt="{:.0f}")
    row(10, f"cm: fan-in of {nf:,} parents, PostgreSQL: last parent's end to the child's start", "ms", "fanin.pg",
        fmt="{:.0f}")

    nr = sz["rate_jobs"]
    row(11, f"cm: rate_limit = \"10/s\", 4 workers over 2 hosts' configs sharing PostgreSQL, {nr} jobs at once: "
        "achieved starts a second, steady window (middle 80% of starts)", "jobs/s", "rate.cm", fmt="{:.2f}")
    row(11, "cm: achieved / configured (one limit for all 4 workers: expect 1)", "x", "rate.cm.ratio", fmt="{:.3f}")
    row(11, f"Celery: rate_limit=\"10/s\", 4 solo workers, {4 * nr} tasks at once: achieved starts a "
        "second, steady window", "jobs/s", "rate.celery", fmt="{:.2f}")
    row(11, "Celery: achieved / configured (its limit is per worker: 4 workers, expect ~4)", "x",
        "rate.celery.ratio", fmt="{:.3f}")
    row(11, "cm: the 4 workers' CPU while the jobs ran (cores busy, all 4 together)", "cores", "rate.cm.cpu",
        fmt="{:.3f}")
    row(11, "Celery: the 4 workers' CPU while the tasks ran (cores busy, all 4 together)", "cores",
        "rate.celery.cpu", fmt="{:.3f}")

    nl = sz["fair_long_seconds"]
    row(12, f"cm, 2 workers (concurrency 1, prefetch 4): 8 quick jobs after a {nl} s one, worst submit to "
        "STARTED", "ms", "fair.cm.worst", fmt="{:.0f}")
    row(12, "the same, median of the 8", "ms", "fair.cm.median", fmt="{:.0f}")
    row(12, "the same with hand_back_after_ms = 0 (a plain prefetching worker), worst", "ms", "fair.off.worst",
        fmt="{:.0f}")
    row(12, "the same with hand_back_after_ms = 0, median of the 8", "ms", "fair.off.median", fmt="{:.0f}")
    return out

"""The Targets table: each goal cm is held to, what this run measured against it, met or not."""

from ..measurements import median


def targets(measured):
    """The table's rows: a target is judged only where both its sides were measured."""
    R = measured.results
    m = lambda k: median(R.get(k, []))  # noqa: E731

    def target(name, ok_value, goal, met):
        return f"| {name} | {ok_value} | {goal} | {'met' if met else '**not met**'} |"

    def paired(key, peer):
        """cm's figure over the peer's, the median of the runs' own ratios (each run's pair was
        measured seconds apart, which this machine's drift from minute to minute moves less than
        it moves a ratio of medians), and those ratios; a ratio of medians where runs do not pair."""
        a, b = R.get(key, []), R.get(peer, [])
        if len(a) == len(b) and a and all(b):
            each = [x / y for x, y in zip(a, b)]
            return median(each), each
        return m(key) / m(peer), []

    def runs(each, pct=True):
        if len(each) < 2:
            return ""
        return " (runs: " + ", ".join(f"{100 * x:.0f}%" if pct else f"{x:.2f}" for x in each) + ")"

    out = []
    if R.get("start.cm") and R.get("start.celery"):
        x = m("start.celery") / m("start.cm")
        out.append(target("start", f"{x:.0f}x faster", ">= 20x faster than celery multi start", x >= 20))
    if R.get("stop.cm") and R.get("stop.celery"):
        x = m("stop.celery") / m("stop.cm")
        out.append(target("stop", f"{x:.0f}x faster", ">= 20x faster than stopwait", x >= 20))
    if R.get("pss.cm") and R.get("pss.celery_solo"):
        x = m("pss.celery_solo") / m("pss.cm")
        out.append(target("memory per worker (PSS)", f"1/{x:.1f} of a solo worker ({m('pss.cm'):.1f} vs "
                              f"{m('pss.celery_solo'):.1f} MiB PSS; RSS {m('rss.cm'):.1f} vs "
                              f"{m('rss.celery_solo'):.1f} MiB)", "<= 1/7 of a Celery solo worker", x >= 7))
    # Throughput is judged against the broker's own ceiling with cm's messages, measured in the
    # same run (the round-one "10x Celery" target is retired: it was above that ceiling).
    ceiling = m("tput.raw_celery") if R.get("tput.raw_celery") else None
    for key, name, goal in (("tput.cm_sqlite", "throughput, SQLite", 0.90),
                            ("tput.cm_pg", "throughput, PostgreSQL", 0.85)):
        if R.get(key) and ceiling:
            x, each = paired(key, "tput.raw_celery")
            out.append(target(name, f"{100 * x:.0f}% of the ceiling with cm's messages{runs(each)}; "
                                  f"medians {m(key):,.0f} jobs/s, ceiling {ceiling:,.0f} msgs/s",
                                  f">= {100 * goal:.0f}% of that ceiling", x >= goal))
    if R.get("tput.cm_sqlite_ev") and R.get("tput.cm_sqlite"):
        x, each = paired("tput.cm_sqlite_ev", "tput.cm_sqlite")
        out.append(target("task events on", f"{100 * x:.0f}% of events off{runs(each)}",
                              ">= 95% of events off", x >= 0.95))
    for key, name in (("lat.provision", "one job, `cm provision --wait`"), ("lat.call", "one job, `cm call --wait`")):
        if R.get(key):
            out.append(target(name, f"{m(key):.1f} ms median", "<= 20 ms median", m(key) <= 20))
    for p in ("p50", "p99"):
        cm_key, celery_key = f"rtt.cm.{p}", f"rtt.celery.{p}"
        if R.get(cm_key) and R.get(celery_key):
            x, each = paired(cm_key, celery_key)
            out.append(target(f"Python round trip {p}", f"cm/Celery {x:.2f}{runs(each, pct=False)}; medians "
                                  f"cm {m(cm_key):.2f} ms, Celery {m(celery_key):.2f} ms",
                                  "cm at or below Celery (ratio <= 1)", x <= 1))

    if R.get("cmd.cm") and R.get("cmd.bare"):
        x, _ = paired("cmd.cm", "cmd.bare")
        peers = [k for k in ("cmd.celery", "cmd.pueue") if R.get(k)]
        ahead = all(m("cmd.cm") > m(k) for k in peers)
        out.append(target("command jobs", f"{100 * x:.0f}% of the bare loop; "
                              + ", ".join(f"{m('cmd.cm') / m(k):.1f}x {k[4:]}" for k in peers),
                              ">= 50% of the bare loop, ahead of Celery and pueue", x >= 0.5 and ahead))
    if R.get("sched.cm.p99"):
        peer = (f"; celery beat p50 {m('sched.celery.p50'):.1f} ms, p99 {m('sched.celery.p99'):.1f} ms"
                if R.get("sched.celery.p99") else "")
        out.append(target("schedule firing (issue 30)", f"slot to job start p50 {m('sched.cm.p50'):.1f} ms, "
                              f"p99 {m('sched.cm.p99'):.1f} ms{peer}", "within 100 ms of the slot (p99), idle worker",
                              m("sched.cm.p99") <= 100))
    if R.get("rate.cm.ratio"):
        x = m("rate.cm.ratio")
        peer = (f"; Celery's per-worker limit on 4 workers {m('rate.celery.ratio'):.2f}x"
                if R.get("rate.celery.ratio") else "")
        out.append(target("global rate limit (issue 31)",
                          f"achieved / configured {x:.3f}{runs(R['rate.cm.ratio'], pct=False)}{peer}",
                          "within 10% of the configured rate, 4 workers on 2 hosts' configs", abs(x - 1) <= 0.1))
    if R.get("fair.cm.worst"):
        off = f"; with hand back off {m('fair.off.worst'):.0f} ms" if R.get("fair.off.worst") else ""
        out.append(target("fair dispatch (issue 31)", f"quick jobs after a long one, worst "
                              f"{m('fair.cm.worst'):.0f} ms{off}", "under 100 ms, 2 workers, shipped defaults",
                              m("fair.cm.worst") < 100))
    return out

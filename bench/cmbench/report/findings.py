"""The findings under figure 4: what the throughput runs, the drains and the profile say about
where cm's time goes, in sentences with this run's numbers."""

from ..cpu import cores, cpu_groups
from ..measurements import median


def findings(run):
    measured = run.measured
    out = []
    n = run.sizes["cm_jobs"]
    d = measured.drain
    R = measured.results
    ph = measured.phases.get("sqlite")
    if ph:
        pub = median([x[0] for x in ph])
        tot = median([x[1] for x in ph])
        text = (f"- End to end (SQLite), `cm launch` needs {pub:.2f} s of the {tot:.2f} s to store and publish "
                f"{n:,} jobs while the workers already drain" + (": the workers keep up, the producer's confirmed "
                "publishes set the pace" if pub > 0.9 * tot else "") + ".")
        if "publish.sqlite.4" in d and "drain.sqlite.4" in d and R.get("tput.raw"):
            pub_rate, drain_rate = d["publish.sqlite.4"], d["drain.sqlite.4"]
            text += (f" Alone, the producer (PENDING rows, then confirmed publishes) does "
                     f"{pub_rate:,.0f} jobs/s against a raw ceiling of {median(R['tput.raw']):,.0f} msgs/s, "
                     f"the 4 workers alone drain {drain_rate:,.0f} jobs/s: "
                     + ("the producer is the slower side." if pub_rate < drain_rate
                        else "the workers are the slower side."))
        out.append(text)
    if R.get("tput.raw") and R.get("tput.raw_celery") and R.get("tput.cm_sqlite"):
        plain, celery, cm = (median(R[k]) for k in ("tput.raw", "tput.raw_celery", "tput.cm_sqlite"))
        out.append(f"- The message format costs the broker: the raw pattern (lapin alone, no store, no job) moves "
                   f"{plain:,.0f} msgs/s with a bare JSON body but {celery:,.0f} msgs/s with cm's messages, which "
                   f"carry the 14 headers and the properties of Celery's protocol v2. cm end to end, with the store, reaches {100 * cm / celery:.0f}% "
                   f"of the latter and {100 * cm / plain:.0f}% of the former (medians over medians; the targets "
                   "table pairs each run with the ceiling run beside it).")
    if "drain.sqlite.4" in d:
        one, four = d["drain.sqlite.1"], d["drain.sqlite.4"]
        x = four / one
        why = (f"more workers add little on {cores()} cores (one worker and RabbitMQ already keep them "
               "busy, and SQLite takes one writer at a time)" if x < 1.5
               else "more workers help, up to the cores")
        out.append(f"- Workers alone on SQLite: 4 workers drain {four:,.0f} jobs/s, {x:.1f}x one worker's "
                   f"{one:,.0f}; {why}. A job whose whole run lands in one group commit is one row of a "
                   "multi-row upsert plus one row of a multi-row history insert (its six states, the producer's "
                   "PENDING row is the other), and one multiple ack per commit "
                   "settles its deliveries."
                   + (f" On PostgreSQL: {d['drain.pg.1']:,.0f} jobs/s with 1 worker, {d['drain.pg.4']:,.0f} with 4."
                      if "drain.pg.4" in d else ""))
    if "cpu.sqlite.4" in d:
        g = cpu_groups([d["cpu.sqlite.4"]])
        m = d["jobs"]
        wk, rb = 1e6 * g.get("cm workers", 0) / m, 1e6 * g.get("RabbitMQ (beam.smp)", 0) / m
        busy, wall = d["cpu.sqlite.4"]["busy"], d["cpu.sqlite.4"]["wall"]
        cap = cores() * 1e6 / (wk + rb) if wk + rb > 0 else 0
        text = (f"- CPU per job while 4 workers drain SQLite: cm workers {wk:.0f} µs, RabbitMQ {rb:.0f} µs, so "
                f"{cores()} cores would allow ~{cap:,.0f} jobs/s if CPU were the limit (the machine was "
                f"{100 * busy / (cores() * wall):.0f}% busy, "
                f"{g.get('other (whole machine minus the above)', 0):.1f} CPU-s of it other work).")
        e2e = measured.profiles.get("sqlite")
        if e2e:
            share = median([p["busy"] / (cores() * p["wall"]) for p in e2e])
            ge = cpu_groups(e2e)
            per = {k: 1e6 * v / n for k, v in ge.items()}
            busy_us = 1e6 * median([p["busy"] for p in e2e]) / n
            parts = ", ".join(f"{k} {v:.0f} µs" for k, v in per.items() if v >= 1)
            text += (f" The end-to-end SQLite runs kept the machine {100 * share:.0f}% busy, {busy_us:.0f} µs "
                     f"of CPU per job ({parts}); 10,000 jobs/s on {cores()} cores leaves "
                     f"{cores() * 100:.0f} µs per job for all of it.")
        out.append(text)
    ceiling = measured.profiles.get("raw_celery")
    if ceiling:
        # The machine is near its limit in these runs: the share of the ceiling a store can reach
        # is about the ceiling's CPU per message over cm's CPU per job, at a like busy share.
        def per_item(profs, n):
            return (1e6 * median([p["busy"] for p in profs]) / n,
                    median([p["busy"] / (cores() * p["wall"]) for p in profs]))
        c_us, c_share = per_item(ceiling, run.sizes["raw_jobs"])
        parts = []
        for kind, label in (("sqlite", "SQLite"), ("pg", "PostgreSQL")):
            if measured.profiles.get(kind):
                us, share = per_item(measured.profiles[kind], run.sizes["cm_jobs"])
                parts.append(f"{label} {us:.0f} µs per job ({100 * share:.0f}% busy), "
                             f"so at most ~{100 * c_us / us:.0f}% of the ceiling")
        out.append(f"- What bounds the ratio to the ceiling: the ceiling run with cm's messages used {c_us:.0f} µs "
                   f"of the machine's CPU per message ({100 * c_share:.0f}% busy); cm end to end used "
                   + "; ".join(parts) + ". The CPU cm's processes add per job (the producer's PENDING rows, "
                   "the workers' commits and wake-ups, the store's server on PostgreSQL) is what is left to win.")
    pg = measured.profiles.get("pg")
    if measured.pg_stats and pg:
        upd, hot, indexes = measured.pg_stats[-1]
        server_us = 1e6 * cpu_groups(pg).get("PostgreSQL", 0) / n
        out.append(f"- What PostgreSQL does per job: the server's processes used {server_us:.0f} µs of CPU per job "
                   f"(the CPU table above). Of the last run's {upd:,} updates of `jobs`, {hot:,} were HOT (the new row "
                   "version on the same page and no new index entry): no index reads a column a job's usual "
                   "update changes (`state` only through `unusual_state`, NULL for PENDING and SUCCESS alike), "
                   "and pages are filled to half by inserts so that the new versions find room; the others "
                   f"wrote an entry in each index they qualify for ({indexes} on the table; the partial ones hold "
                   "only rows with a batch, a server, a lease, an eta or an unusual state). SQLite rewrites the "
                   "row in place and changes only the index entries of the columns it sets.")
    e2e = measured.profiles.get("sqlite")
    if isinstance(measured.perf, dict) and e2e and ceiling:
        p, n = measured.perf, run.sizes["cm_jobs"]
        workers_us = 1e6 * cpu_groups(e2e).get("cm workers", 0) / n
        busy_us = 1e6 * median([p_["busy"] for p_ in e2e]) / n
        commit_us = p["parts"]["commit"] * workers_us
        c_us = 1e6 * median([p_["busy"] for p_ in ceiling]) / run.sizes["raw_jobs"]
        out.append(f"- Where the workers' CPU goes end to end (the profile below): the store's commits take "
                   f"{100 * p['parts']['commit']:.0f}% of it, ~{commit_us:.0f} µs of the workers' {workers_us:.0f} µs "
                   f"per job (appending pages to the WAL {100 * p['parts']['wal']:.0f}%, reading back pages another "
                   f"worker's commit changed {100 * p['parts']['reread']:.0f}%); the jobs' own handling "
                   f"{100 * p['parts']['jobs']:.0f}%, parking and waking {100 * p['parts']['park']:.0f}%. Without "
                   f"those commits cm would use ~{busy_us - commit_us:.0f} µs of machine CPU per job, "
                   f"~{100 * c_us / max(busy_us - commit_us, 1):.0f}% of the ceiling's: the store's writes are the gap "
                   "(the producer's PENDING rows are more of it, not counted here).")
    if "drain.celery" in d and R.get("tput.celery"):
        out.append(f"- Celery: its workers alone drain {d['drain.celery']:,.0f} tasks/s; its Python producer "
                   f"alone sends {d['publish.celery']:,.0f}/s, so its end-to-end {median(R['tput.celery']):,.0f}/s "
                   "is bound by " + ("the producer" if d["publish.celery"] < d["drain.celery"] else "the workers")
                   + " (the slower side alone; run together they also share the cores).")
    return out

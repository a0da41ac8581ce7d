"""cm against Celery 5 on the same broker, written to docs/BENCHMARKS.md (bench/bench.py runs it).

In the order a run meets them:
- settings: sizes, the job every figure launches, the throughput prefetch
- run: one run's arguments, name, temp dir, Celery app and command runner; `die`
- measurements: what the figures measured, which the report reads; `median`
- procfs, cpu: process trees, memory and CPU ticks from /proc; CpuMeter and its summaries
- stack, celery_multi, postgres, broker: a cm stack of the run's own, Celery workers under
  `celery multi`, PostgreSQL databases, RabbitMQ's processes and settling
- figures/: one module per figure (lifecycle, throughput, scale, first_page, latency,
  command_jobs) and profiles (figure 4's drain, perf and PostgreSQL aids)
- cleanup: what a run started, undone
- report/: results table, targets, where the throughput time goes, findings, the document
"""

"""What every figure shares: the sizes of a run, the job they launch, the throughput prefetch."""

SIZES = {
    # cm jobs per throughput run, Celery tasks per run, raw-ceiling messages, workers per queue
    # (4 queues) for the scale figure, jobs in the store at each step of the first-page figure
    # (the store grows from one to the next), one-job commands and Python round trips per run of
    # the latency figure, /bin/true jobs per command-jobs run, seconds of 1 s slots per side and run
    # of the schedules figure and the least time from its workers' start to its first slot, chains
    # per side and run and parents of the fan-in of the workflows figure, the long job of the fair
    # dispatch figure, cm's jobs per run of the rates figure (Celery is sent 4x).
    "full": dict(cm_jobs=20000, celery_jobs=3000, raw_jobs=30000, scale=[1, 2, 4, 10],
                 db_jobs=[100000, 1000000], one_job=30, round_trips=300, command_jobs=2000,
                 schedule_seconds=30, schedule_lead=1, chains=5, fanin=1000, fair_long_seconds=10,
                 rate_jobs=100),
    "smoke": dict(cm_jobs=300, celery_jobs=200, raw_jobs=2000, scale=[1, 2], db_jobs=[1000, 2000],
                  one_job=3, round_trips=10, command_jobs=40, schedule_seconds=2,
                  schedule_lead=0, chains=1, fanin=20, fair_long_seconds=1,
                  rate_jobs=10),
}
SERVER, RECIPE = "india_openstack_essex", "Hadoop"
LAUNCH_KWARGS = {"server": SERVER, "recipe": RECIPE, "kind": "vm", "hosts": "x", "user": None}
# Unacked messages per worker in the throughput figures, for cm (`prefetch`) and Celery
# (`worker_prefetch_multiplier`, -c 1) alike. No-op jobs finish in microseconds; the default 4
# makes each worker wait for its acks to reach the broker before it is sent more. One row keeps
# cm's default for comparison.
TPUT_PREFETCH = 256


def sizes(smoke, environ):
    """The run's sizes: the mode's, then any BENCH_CM_JOBS, BENCH_CELERY_JOBS, BENCH_RAW_JOBS and
    BENCH_DB_JOBS (comma-separated) from `environ`."""
    out = dict(SIZES["smoke" if smoke else "full"])
    for key in ("cm_jobs", "celery_jobs", "raw_jobs"):
        env = environ.get("BENCH_" + key.upper())
        if env:
            out[key] = int(env)
    env = environ.get("BENCH_DB_JOBS")
    if env:
        out["db_jobs"] = sorted(int(n) for n in env.split(","))
    return out

#!/usr/bin/env bash
# Instructions per job of one worker draining a pre-filled queue, counted by callgrind: the
# figure a change to the worker's hot path is judged by (repeatable, unlike seconds).
#
#   bash scripts/callgrind-drain.sh [--bin PATH] [--jobs N] [--store URL] [--send-events] [--out FILE]
#
# Pre-fills a queue of its own with N jobs (default 3000) while no worker runs, then runs
# `cm worker w1` (prefetch 256, zero-length steps) under callgrind until every job is SUCCESS,
# stops it with SIGTERM and prints total instructions / N. Counts move about ±1% run to run
# with how the batches fall. --send-events turns Celery's task events on (`[worker]
# send_events = true`); they go to the celeryev exchange whether anyone listens or not.
# --out keeps the callgrind output for callgrind_annotate.
# Needs valgrind and RabbitMQ at 127.0.0.1:5672 (CG_BROKER_URL).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${CARGO_TARGET_DIR:-$root/target}/release/cm
jobs=3000
store=
events_line=
out=
broker=${CG_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift ;;
        --jobs) jobs=$2; shift ;;
        --store) store=$2; shift ;;
        --send-events) events_line="send_events = true" ;;
        --out) out=$2; shift ;;
        *) echo "callgrind-drain: unknown argument $1 (see the top of $0)" >&2; exit 64 ;;
    esac
    shift
done
command -v valgrind >/dev/null || { echo "callgrind-drain: needs valgrind (apt-get install valgrind)" >&2; exit 69; }
[ -x "$bin" ] || { echo "callgrind-drain: build $bin first (cargo build --release)" >&2; exit 66; }

work=$(mktemp -d /tmp/cm-cg.XXXXXX)
queue="cm_cg_$$"
worker_pid=
cleanup() {
    [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null || true
    for q in "$queue" "$queue.dead"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/run" "$work/log"
cat > "$work/fabfile.toml" <<EOF
[broker]
url = "$broker"
[paths]
pid_dir = "run"
log_dir = "log"
[worker]
allow_root = true
$events_line
[queues.$queue]
workers = ["w1"]
tasks = ["cm.launch"]
concurrency = 1
prefetch = 256
# Under callgrind a job takes far longer than fair dispatch's moment: without this the worker
# would hand its prefetch back and consume with prefetch 1, measuring that instead.
hand_back_after_ms = 0
[simulation]
step_seconds = [0, 0]
[store]
url = "${store:-sqlite://$work/cm.db}"
EOF
cm() { "$bin" --config "$work/fabfile.toml" "$@"; }
cm launch --server india_openstack_essex --recipe Hadoop --hosts x --count "$jobs" --quiet >/dev/null

valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$work/cg.out" \
    "$bin" --config "$work/fabfile.toml" worker w1 >"$work/worker.out" 2>"$work/worker.err" &
worker_pid=$!
for _ in $(seq 3000); do
    done_jobs=$(cm jobs --state SUCCESS --limit 0 -q 2>/dev/null | wc -l)
    [ "$done_jobs" -ge "$jobs" ] && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.err" >&2; exit 70; }
    sleep 0.2
done
kill -TERM "$worker_pid"
wait "$worker_pid" || true
worker_pid=
total=$(sed -n 's/^summary: *//p' "$work/cg.out" | head -1)
[ -n "$total" ] || { echo "callgrind-drain: no summary in the callgrind output" >&2; exit 70; }
[ -z "$out" ] || cp "$work/cg.out" "$out"
python3 -c "import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(f'{t} instructions, {n} jobs, {t / n / 1000:.1f}k instructions per job')" "$total" "$jobs"

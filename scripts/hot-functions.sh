#!/usr/bin/env bash
# Writes link/hot-functions.txt: the functions a worker runs, startup first, which build.rs hands
# to the linker (lld --symbol-ordering-file) so they sit together at the front of .text.
#
#   bash scripts/hot-functions.sh            # profile target/release/cm, write the list
#   bash scripts/hot-functions.sh --check [--bin PATH]   # how much of the list a binary has
#
# Why: the kernel maps file pages around each page fault (fault-around, whole large folios), so
# a worker touching ~1.5 MB of scattered code had most of the 7 MB .text resident. With the code
# it runs packed together, an idle worker's RSS drops by about a third (docs/BENCHMARKS.md).
#
# Needs valgrind (callgrind), RabbitMQ at 127.0.0.1:5672 (HOT_BROKER_URL) and python3. Symbol
# names carry Cargo's metadata hash, so a changed Cargo.lock or build profile makes the list
# stale: a stale list costs memory, never correctness (lld skips names it does not find), and
# `--check` (run by `make bench`) says so. Rerun this script after such a change.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
list=link/hot-functions.txt
bin=${CARGO_TARGET_DIR:-$root/target}/release/cm
broker=${HOT_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
jobs=${HOT_JOBS:-300}

check=
while [ $# -gt 0 ]; do
    case $1 in
        --check) check=1 ;;
        --bin) [ $# -ge 2 ] || { echo "hot-functions: --bin needs a path" >&2; exit 64; }
               bin=$2; shift ;;
        *) echo "hot-functions: unknown argument $1 (see the top of $0)" >&2; exit 64 ;;
    esac
    shift
done

if [ -n "$check" ]; then
    [ -x "$bin" ] || { echo "hot-functions: build $bin first (cargo build --release)" >&2; exit 66; }
    exec python3 - "$list" "$bin" <<'PY'
import subprocess, sys
listed = [l for l in open(sys.argv[1]).read().split("\n") if l and not l.startswith("#")]
nm = subprocess.run(["nm", "--defined-only", sys.argv[2]], capture_output=True, text=True, check=True)
have = {l.split()[-1] for l in nm.stdout.splitlines() if l.split()}
found = sum(1 for s in listed if s in have)
share = found / len(listed) if listed else 0
print(f"{found} of {len(listed)} hot functions found in {sys.argv[2]} ({share:.0%})")
if share < 0.9:
    print("hot-functions: the list is stale; rerun bash scripts/hot-functions.sh", file=sys.stderr)
    sys.exit(1)
PY
fi

command -v valgrind >/dev/null || { echo "hot-functions: needs valgrind (apt-get install valgrind)" >&2; exit 69; }
cargo build --release --quiet --bin cm

work=$(mktemp -d /tmp/cm-hot.XXXXXX)
queue="cm_hot_$$"
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
[queues.$queue]
workers = ["w1"]
tasks = ["cm.launch"]
concurrency = 1
prefetch = 256
[simulation]
step_seconds = [0, 0]
[store]
url = "sqlite://$work/cm.db"
EOF

# A worker as `cm queue start` runs it, on a fresh store (so its migrations are in the profile).
# Dump 1 is startup until consuming; dump 2 is the jobs and the warm shutdown.
valgrind --tool=callgrind --dump-instr=no --demangle=no --callgrind-out-file="$work/cg.%p" \
    "$bin" --config "$work/fabfile.toml" worker w1 2>"$work/worker.err" &
worker_pid=$!
for _ in $(seq 600); do
    grep -q "consuming from queue" "$work/worker.err" && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.err" >&2; exit 70; }
    sleep 0.1
done
grep -q "consuming from queue" "$work/worker.err" || { echo "hot-functions: worker never consumed" >&2; exit 70; }
callgrind_control -d "$worker_pid" >/dev/null
"$bin" --config "$work/fabfile.toml" launch --server india_openstack_essex --recipe Hadoop \
    --hosts x --count "$jobs" --wait --timeout 300 --quiet >/dev/null
kill -TERM "$worker_pid"
wait "$worker_pid" || true
worker_pid=

python3 - "$bin" "$list" "$work"/cg.*.1 "$work"/cg.[0-9]* <<'PY'
import re, subprocess, sys
binary, dest, startup, *rest = sys.argv[1:]
rest = [p for p in rest if not p.endswith(".1")]

def self_cost(path):
    """Instructions per function (self cost) from a callgrind dump with compressed names."""
    names, cost, cur, after_call = {}, {}, None, False
    for line in open(path):
        if line.startswith(("fn=", "cfn=")):
            kind, ident, name = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n")).groups()
            if name:
                names[ident] = name
            if kind == "fn":
                cur = names[ident]
        elif line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
            elif cur:
                parts = line.split()
                if len(parts) >= 2:
                    cost[cur] = cost.get(cur, 0) + int(parts[1])
    return cost

nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
text = {p[2] for p in (l.split() for l in nm.stdout.splitlines()) if len(p) == 3 and p[1] in "tTwW"}
order, seen = [], set()
for part, dump in enumerate([startup, *rest]):
    cost = self_cost(dump)
    if part == 1:
        order.append("# the jobs and the warm shutdown (what startup did not run)")
    for name in sorted((n for n in cost if n in text and n not in seen), key=lambda n: -cost[n]):
        order.append(name)
        seen.add(name)
with open(dest, "w") as f:
    f.write("# Written by scripts/hot-functions.sh: a worker's functions, startup first, hottest first.\n")
    f.write("# build.rs passes this to lld as --symbol-ordering-file. Regenerate, do not edit.\n")
    f.write("\n".join(order) + "\n")
print(f"hot-functions: {len(seen)} functions written to {dest}")
PY

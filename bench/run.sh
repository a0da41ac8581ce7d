#!/usr/bin/env bash
# cm against Celery 5 on the local RabbitMQ (and PostgreSQL), written to docs/BENCHMARKS.md.
#
#   bash bench/run.sh                 # the real run: every figure BENCH_REPEAT times (default 5)
#   bash bench/run.sh --smoke         # 1 repeat, tiny sizes, < 60 s: that the script still works
#   bash bench/run.sh --out FILE      # write the report elsewhere (the smoke test does)
#   bash bench/run.sh --only NAME     # one figure alone (lifecycle, throughput, scale, first_page, latency,
#                                     # command_jobs, schedules, fair, workflows, rates); repeat it for several
#
# Builds target/release/cm and the raw_ceiling example unless CM_BIN and RAW_CEILING_BIN name
# ready binaries. Needs RabbitMQ at 127.0.0.1:5672 (BENCH_BROKER_URL) and PostgreSQL at
# 127.0.0.1:5432 (BENCH_PG_URL; without it the PostgreSQL rows say skipped). Sizes:
# BENCH_CM_JOBS, BENCH_CELERY_JOBS, BENCH_RAW_JOBS, BENCH_DB_JOBS (comma-separated store sizes).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

out=docs/BENCHMARKS.md
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) args+=(--smoke) ;;
        --out) [ $# -ge 2 ] || { echo "bench: --out needs a path" >&2; exit 64; }
               out=$2; shift ;;
        --out=*) out=${1#--out=} ;;
        --only) [ $# -ge 2 ] || { echo "bench: --only needs a figure name" >&2; exit 64; }
                args+=(--only "$2"); shift ;;
        --repeat) [ $# -ge 2 ] || { echo "bench: --repeat needs a number" >&2; exit 64; }
                  args+=(--repeat "$2"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done

bash scripts/ensure-celery-venv.sh >&2
# pueue, figure 8's peer, from crates.io (once; minutes to build). The smoke run goes without it,
# and the row then says it was not measured; so does a run whose --only leaves figure 8 out.
case " ${args[*]-} " in
    *" --smoke "*) ;;
    *" --only "*) case " ${args[*]} " in *" --only command_jobs "*) need_pueue=1 ;; *) need_pueue= ;; esac ;;
    *) need_pueue=1 ;;
esac
case ${need_pueue:-} in
    1) if ! command -v pueue >/dev/null && [ ! -x "$HOME/.cargo/bin/pueue" ]; then
           echo "==> cargo install pueue --locked (figure 8's peer)" >&2
           cargo install pueue --locked --quiet || echo "bench: pueue did not install; figure 8 goes without it" >&2
       fi ;;
    *) ;;
esac

if [ -z "${CM_BIN:-}" ] || [ -z "${RAW_CEILING_BIN:-}" ]; then
    # Two builds: with the example in the same build, dev-dependency features change the
    # dependencies' hashes, so cm would not be the binary `make build` links.
    echo "==> cargo build --release --bin cm; cargo build --release --example raw_ceiling" >&2
    cargo build --release --quiet --bin cm
    cargo build --release --quiet --example raw_ceiling
    target=${CARGO_TARGET_DIR:-$root/target}
    CM_BIN=${CM_BIN:-$target/release/cm}
    RAW_CEILING_BIN=${RAW_CEILING_BIN:-$target/release/examples/raw_ceiling}
fi
for bin in "$CM_BIN" "$RAW_CEILING_BIN"; do
    [ -x "$bin" ] || { echo "bench: $bin is not an executable" >&2; exit 66; }
done

mkdir -p "$(dirname "$out")"
export PYTHONDONTWRITEBYTECODE=1  # no bench/__pycache__ in the work tree
exec bench/.venv/bin/python bench/bench.py --cm "$CM_BIN" --raw "$RAW_CEILING_BIN" --out "$out" "${args[@]}"

#!/usr/bin/env bash
# A three-node RabbitMQ cluster of a test's own, beside the machine's broker (never touched):
#
#   bash scripts/rabbitmq-cluster.sh start NAME BASEPORT [CONF_LINE...]  # idempotent; prints 3 URLs
#   bash scripts/rabbitmq-cluster.sh stop NAME                           # idempotent; removes all data
#   bash scripts/rabbitmq-cluster.sh stop-node NAME I                    # stops member I (1-3) cleanly
#   bash scripts/rabbitmq-cluster.sh kill-node NAME I                    # SIGKILLs member I (a crash)
#   bash scripts/rabbitmq-cluster.sh start-node NAME I                   # brings member I back
#
# Member I is the node NAME-I@localhost of scripts/rabbitmq-node.sh, with AMQP on
# 127.0.0.1:BASEPORT+I-1 and distribution on that +20000; its data is in /tmp/cm-rabbit-NAME-I.
# `start` prints the three AMQP URLs one per line, member 1 first (join them with `;` for
# CM_BROKER_URL). Members 2 and 3 join member 1's cluster as they boot (classic_config peer
# discovery); every node runs as the rabbitmq user, so all share its Erlang cookie. A member brought back rejoins by itself (its data remembers
# the cluster). BASEPORT and the CONF_LINEs are kept in /tmp/cm-rabbit-NAME.cluster for
# start-node.
set -euo pipefail

here=$(dirname "${BASH_SOURCE[0]}")
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 64; }
[ $# -ge 2 ] || usage
action=$1 name=$2
shift 2
case $name in *[!a-zA-Z0-9_-]*|"") echo "rabbitmq-cluster: bad cluster name $name" >&2; exit 64 ;; esac
state="/tmp/cm-rabbit-$name.cluster"
node() { echo "$name-$1@localhost"; }
ctl() { local i=$1; shift; rabbitmqctl -q -n "$(node "$i")" "$@"; }

# Starts member $1 (from the state file) and prints its URL.
start_member() {
    local i=$1 base conf=()
    base=$(head -n 1 "$state")
    mapfile -t conf < <(tail -n +2 "$state")
    # Peer discovery is for a blank node only: a member brought back with its data keeps its
    # cluster, and member 1 ignores its own name.
    conf+=("cluster_formation.peer_discovery_backend = classic_config"
        "cluster_formation.classic_config.nodes.1 = $(node 1)")
    bash "$here/rabbitmq-node.sh" start "$name-$i" $((base + i - 1)) "${conf[@]}"
}

# Whether member $1 is in member 1's cluster and running there.
joined() { ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "\"running_nodes\":\[[^]]*\"$(node "$1")\""; }

member_index() {
    case ${1:-} in 1|2|3) echo "$1" ;; *) echo "rabbitmq-cluster: member must be 1, 2 or 3, not ${1:-nothing}" >&2; exit 64 ;; esac
}

case $action in
start)
    [ $# -ge 1 ] || usage
    base=$1
    shift
    case $base in *[!0-9]*|"") echo "rabbitmq-cluster: bad base port $base" >&2; exit 64 ;; esac
    [ "$base" -ge 1024 ] && [ "$base" -le 45530 ] \
        || { echo "rabbitmq-cluster: base port $base: the three ports and those +20000 must fit" >&2; exit 64; }
    # The machine's broker: 5672 AMQP, 25672 distribution. Never start beside either.
    for p in $base $((base + 1)) $((base + 2)); do
        if [ "$p" -eq 5672 ] || [ "$p" -eq 25672 ] || [ $((p + 20000)) -eq 25672 ]; then
            echo "rabbitmq-cluster: port $p or its distribution port is the machine broker's" >&2; exit 64
        fi
    done
    { echo "$base"; for line in "$@"; do echo "$line"; done; } > "$state"
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    # Member 1 first, then 2 and 3 side by side, which find it by their config and join it as
    # they boot: 14-29 s on two cores (measured), where three standalone boots and two
    # join_clusters after them (stop_app, reset, join_cluster, start_app) took 30 s.
    boot() {
        (start_member "$1" > "$out/$1" 2> "$out/$1.err"; echo $? > "$out/$1.rc") &
    }
    boot 1
    wait
    boot 2
    boot 3
    wait
    for i in 1 2 3; do
        [ "$(cat "$out/$i.rc")" = 0 ] || { cat "$out/$i.err" >&2; echo "rabbitmq-cluster: member $i did not start" >&2; exit 69; }
    done
    for i in 2 3; do
        for _ in $(seq 40); do joined "$i" && break; sleep 0.5; done
        joined "$i" || { echo "rabbitmq-cluster: member $i did not join $(node 1) (see /tmp/cm-rabbit-$name-$i/log)" >&2; exit 69; }
    done
    cat "$out/1" "$out/2" "$out/3"
    ;;
stop)
    for i in 1 2 3; do bash "$here/rabbitmq-node.sh" stop "$name-$i" & done
    wait
    rm -f "$state"
    ;;
stop-node)
    i=$(member_index "${1:-}")
    bash "$here/rabbitmq-node.sh" halt "$name-$i"
    ;;
kill-node)
    i=$(member_index "${1:-}")
    bash "$here/rabbitmq-node.sh" kill "$name-$i"
    ;;
start-node)
    i=$(member_index "${1:-}")
    [ -f "$state" ] || { echo "rabbitmq-cluster: no cluster $name (start it first)" >&2; exit 69; }
    start_member "$i" >/dev/null
    # Back in the cluster, not merely up: quorum queues count it again only then.
    for _ in $(seq 60); do joined "$i" && break; sleep 0.5; done
    joined "$i" || { echo "rabbitmq-cluster: member $i is up but not back in the cluster" >&2; exit 69; }
    ;;
*) usage ;;
esac

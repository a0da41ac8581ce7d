#!/usr/bin/env bash
# A RabbitMQ node of a test's own, beside the machine's broker (which it never touches):
#
#   bash scripts/rabbitmq-node.sh start NAME PORT [--listen ADDR]... [--tls] [CONF_LINE...]
#                                       # idempotent; prints its URL (at the first address)
#   bash scripts/rabbitmq-node.sh stop NAME     # idempotent; removes its data
#   bash scripts/rabbitmq-node.sh halt NAME     # stops it, keeps its data
#   bash scripts/rabbitmq-node.sh kill NAME     # SIGKILL (a crash), keeps its data
#
# NAME becomes the Erlang node NAME@localhost, with AMQP on PORT at each --listen address
# (default 127.0.0.1 alone) and distribution on PORT+20000; its data, log and config live in
# /tmp/cm-rabbit-NAME (owned by the rabbitmq user, whom rabbitmq-server switches to). --tls:
# the listeners are TLS ones only (amqps://; the ssl_options.* lines come as CONF_LINEs). Each
# CONF_LINE is a rabbitmq.conf line, e.g. "consumer_timeout = 5000". No plugins, so nothing
# else (management's 15672) is bound. After `halt` or `kill`, `start` with the same PORT brings
# the node back with its queues, messages and cluster membership (scripts/rabbitmq-cluster.sh
# uses these for its fault tests).
set -euo pipefail

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 64; }
[ $# -ge 2 ] || usage
action=$1 name=$2
shift 2
case $name in *[!a-zA-Z0-9_-]*|"") echo "rabbitmq-node: bad node name $name" >&2; exit 64 ;; esac
node="$name@localhost"
dir="/tmp/cm-rabbit-$name"
ctl() { rabbitmqctl -q -n "$node" "$@"; }
# Registered with epmd: the node's VM lives (booting or up). Asked of epmd, not `rabbitmqctl
# status`: each rabbitmqctl is an Erlang VM of its own (~1.5 s of CPU), and polling with it
# made three nodes booting side by side take 30 s on two cores.
running() { epmd -names 2>/dev/null | grep -qx "name $name at port [0-9]*"; }

case $action in
start)
    [ $# -ge 1 ] || usage
    port=$1
    shift
    # Addresses to listen on: a test's hosts in network namespaces reach it over veth pairs.
    listen=() tls=
    while [ $# -ge 1 ]; do
        case $1 in
            --listen) [ $# -ge 2 ] || usage; listen+=("$2"); shift 2 ;;
            --tls) tls=1; shift ;;
            *) break ;;
        esac
    done
    [ ${#listen[@]} -gt 0 ] || listen=(127.0.0.1)
    command -v rabbitmq-server >/dev/null || bash "$(dirname "${BASH_SOURCE[0]}")/ensure-rabbitmq.sh" >&2
    if ! running; then
        mkdir -p "$dir/mnesia" "$dir/log"
        {
            i=0
            kind=tcp
            if [ -n "$tls" ]; then kind=ssl; echo "listeners.tcp = none"; fi
            for addr in "${listen[@]}"; do i=$((i + 1)); echo "listeners.$kind.$i = $addr:$port"; done
            echo "loopback_users = none"
            for line in "$@"; do echo "$line"; done
        } > "$dir/rabbitmq.conf"
        echo '[].' > "$dir/enabled_plugins"
        chown -R rabbitmq:rabbitmq "$dir" 2>/dev/null || true
        # RABBITMQ_NODE_PORT would add a plain listener to a TLS-only node.
        node_port=(RABBITMQ_NODE_PORT="$port")
        [ -z "$tls" ] || node_port=()
        env "${node_port[@]}" RABBITMQ_NODENAME="$node" RABBITMQ_DIST_PORT=$((port + 20000)) \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_PID_FILE="$dir/pid" rabbitmq-server -detached >/dev/null 2>&1
        # `await_startup` fails until the node has registered with epmd: wait for that first.
        for _ in $(seq 240); do running && break; sleep 0.25; done
        running || { echo "rabbitmq-node: $node did not start (see $dir/log)" >&2; exit 69; }
    fi
    # Also when it was running already: it may still be booting.
    ctl await_startup
    echo "amqp${tls:+s}://guest:guest@${listen[0]}:$port/%2f"
    ;;
stop|halt)
    if running; then ctl stop >/dev/null 2>&1 || true; fi
    for _ in $(seq 40); do running || break; sleep 0.25; done
    if [ "$action" = stop ]; then rm -rf "$dir"; fi
    ;;
kill)
    # The pid file is the node's own: never a name match, which could hit the machine's broker.
    if [ -s "$dir/pid" ]; then kill -KILL "$(cat "$dir/pid")" 2>/dev/null || true; fi
    for _ in $(seq 40); do running || break; sleep 0.25; done
    ;;
*) usage ;;
esac

#!/usr/bin/env bash
# Make sure a RabbitMQ broker is installed, running and reachable on 127.0.0.1:5672.
# Idempotent; a fast no-op when the broker already answers.
set -euo pipefail

# rabbitmq-* live in /usr/sbin, which is not always on PATH (e.g. under sudo/CI).
export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

# A down node makes rabbitmqctl wait for a connection; bound it so we notice quickly.
broker_up() { timeout 15 rabbitmqctl status >/dev/null 2>&1; }
port_open() { timeout 2 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "==> installing rabbitmq-server"
    apt-get update -qq
    apt-get install -y -qq rabbitmq-server >/dev/null
fi

if ! broker_up; then
    # No systemd on these machines: start the node directly (the Debian wrapper
    # drops to the rabbitmq user when run as root).
    echo "==> starting rabbitmq-server"
    rabbitmq-server -detached
    # await_startup fails (exit 69) until the node has registered, so poll status first.
    deadline=$((SECONDS + 60))
    until broker_up; do
        if ((SECONDS >= deadline)); then
            echo "==> rabbitmq did not answer within 60 s" >&2
            exit 1
        fi
        sleep 1
    done
    rabbitmqctl await_startup >/dev/null
fi

# The node can answer rabbitmqctl before the AMQP listener is bound.
deadline=$((SECONDS + 60))
until port_open; do
    if ((SECONDS >= deadline)); then
        echo "==> port 5672 not accepting connections within 60 s" >&2
        exit 1
    fi
    sleep 1
done
echo "==> rabbitmq is up on 127.0.0.1:5672"

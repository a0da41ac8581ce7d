#!/usr/bin/env bash
# Tools the deploy tests run (tests/deploy.rs): logrotate, flock, systemd-analyze.
# Idempotent; a fast no-op when they are present. systemd-analyze comes with the systemd package,
# which this script does not install (heavy, and cm does not need it): its test prints SKIPPED without it.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v logrotate >/dev/null 2>&1 || missing+=(logrotate)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

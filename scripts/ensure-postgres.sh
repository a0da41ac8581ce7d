#!/usr/bin/env bash
# Make sure PostgreSQL is installed, running on 127.0.0.1:5432 and accepts
# password-less TCP logins as postgres from localhost (the tests rely on it).
# Idempotent; a fast no-op when the server is already up.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
    echo "==> installing postgresql"
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi

# Cluster dirs are plain version numbers (e.g. 15), so ls is safe here.
# shellcheck disable=SC2012
version=$(ls /etc/postgresql | head -1)

if ! pg_up; then
    # No systemd here; without the flag pg_ctlcluster would try to redirect to systemctl.
    echo "==> starting postgresql $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    deadline=$((SECONDS + 60))
    until pg_up; do
        if ((SECONDS >= deadline)); then
            echo "==> postgresql not ready within 60 s" >&2
            exit 1
        fi
        sleep 1
    done
fi

# Debian's default pg_hba uses scram for host connections; tests connect over TCP
# without a password, so trust localhost. -w: fail instead of prompting.
if ! err=$(psql -w -h 127.0.0.1 -U postgres -tAc 'select 1' 2>&1 >/dev/null); then
    if ! grep -qiE 'password|authentication|pg_hba' <<<"$err"; then
        echo "==> psql failed: $err" >&2
        exit 1
    fi
    hba=/etc/postgresql/$version/main/pg_hba.conf
    echo "==> trusting 127.0.0.1 in $hba"
    # pg_hba is first-match, so the line has to go at the top.
    grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba" ||
        sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
    psql -w -h 127.0.0.1 -U postgres -tAc 'select 1' >/dev/null
fi
echo "==> postgresql is up on 127.0.0.1:5432"

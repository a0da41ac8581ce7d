#!/usr/bin/env bash
# Make sure bench/.venv holds Celery 5.x (the benchmark compares cm against it) and Flower 2.x
# (tests/celery_tools.rs runs `celery inspect`, `celery control` and Flower against cm workers).
# Flower 2 has no script of its own: it is `celery flower`. Idempotent; a no-op when both import.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/bench/.venv

if [ -x "$venv/bin/celery" ] && "$venv/bin/python" -c 'import celery, flower' 2>/dev/null; then
    echo "==> celery venv ready at $venv"
    exit 0
fi

# Debian's system python3 ships the venv module but not ensurepip without
# python3-venv, so "-m venv" would fail halfway; pyenv pythons have both.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "==> installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

if [ ! -x "$venv/bin/pip" ]; then
    echo "==> creating $venv"
    # --clear: a previous interrupted run may have left a half-built venv.
    python3 -m venv --clear "$venv"
fi
echo "==> installing celery and flower into $venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'celery>=5.3,<6' 'flower>=2,<3'
echo "==> celery $("$venv/bin/celery" --version), flower $("$venv/bin/python" -c 'import flower; print(flower.__version__)')"

#!/bin/sh
# A real recipe, as cm runs one: `fabfile.toml`'s [recipes."Demo"] calls this with the launch's
# values as arguments (never through a shell). What it prints goes to the worker's log with the
# job id; a line "cm-state: NAME" records step NAME; a JSON file at $CM_RESULT is the result.
set -eu
server=$1 recipe=$2 host=$3
echo "cm-state: running"
echo "preparing $recipe on $host ($server), job $CM_JOB_ID on $CM_WORKER"
sleep 1
echo "cm-state: deploy"
echo "deploying"
sleep 1
echo "cm-state: active"
printf '{"deployed": true, "steps": 3}\n' > "$CM_RESULT"

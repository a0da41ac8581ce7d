#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are installed (browser tests need both).
# Idempotent; a no-op when both binaries exist.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "==> installing chromium and chromium-driver"
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "==> $(/usr/bin/chromedriver --version | head -1)"

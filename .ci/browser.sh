#!/usr/bin/env bash
# Debian's chromium for the TensorBoard browser tests (tests/system/test_tensorboard_browser.py),
# which Playwright drives; Playwright's own browser download cannot work here. Installs it only when
# missing (CI runs as root on Debian).
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version

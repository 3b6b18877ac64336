#!/usr/bin/env bash
# Make sure Debian's chromium is there for the console's browser tests (tests/browser/):
# Playwright drives it by its path, GEOFENCE_TEST_CHROMIUM (default /usr/bin/chromium), and
# never downloads a browser of its own. Installs it from the OS packages when missing.
set -euo pipefail
chromium=${GEOFENCE_TEST_CHROMIUM:-/usr/bin/chromium}

[ -x "$chromium" ] && exit 0
echo "chromium missing: installing it from the OS packages" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$chromium" ] || { echo "chromium is not at $chromium after the install" >&2; exit 1; }

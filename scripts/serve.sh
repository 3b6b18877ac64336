#!/usr/bin/env bash
# Set up and run the service on a fresh machine:  bash scripts/serve.sh [geofence serve flags]
# The embedded default: in-memory state, stores.geojson loaded, notifications on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GEOFENCE_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e .
exec "$venv/bin/geofence" serve "$@"

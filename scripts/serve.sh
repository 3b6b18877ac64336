#!/usr/bin/env bash
# Set up and run the service on a fresh machine:  bash scripts/serve.sh [geofence serve flags]
# The embedded default: in-memory state, stores.geojson loaded, notifications on stdout.
# The venv (GEOFENCE_VENV, default .venv) is made and the package installed only when the
# venv is missing or pyproject.toml changed since the last install: after that, starting
# needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GEOFENCE_VENV:-.venv}
stamp="$venv/.geofence-installed"
wanted=$(cksum <pyproject.toml)
if [ ! -x "$venv/bin/geofence" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "serve.sh: installing geofence into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e .
    echo "$wanted" >"$stamp"
fi
exec "$venv/bin/geofence" serve "$@"

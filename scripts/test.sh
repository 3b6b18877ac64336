#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine:  bash scripts/test.sh [pytest args]
# Creates the venv (GEOFENCE_VENV, default .venv), installs the project with its test extra,
# makes sure a Redis server and a Redis Cluster answer, runs ruff, mypy and pytest, and
# fails if any test was skipped: every test here is meant to run. Long soaks run only
# with --soak.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${GEOFENCE_VENV:-.venv}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
PYTHON="$venv/bin/python" bash scripts/ensure-redis.sh
# the store contract also runs on a Redis Cluster (3 primaries, 3 replicas on 30001-30006)
GEOFENCE_TEST_CLUSTER_URL=${GEOFENCE_TEST_CLUSTER_URL:-$(bash scripts/ensure-cluster.sh)}
export GEOFENCE_TEST_CLUSTER_URL
bash scripts/ensure-chromium.sh  # the console's browser tests (tests/browser/)

"$venv/bin/ruff" check geofence tests benchmarks tools scripts examples
"$venv/bin/ruff" format --check geofence tests benchmarks tools scripts examples
"$venv/bin/mypy"
# the import rules between the rooms (ARCHITECTURE.md): a violation fails before the suite
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_layers.py

report=$(mktemp -d)/junit.xml
GEOFENCE_REQUIRE_REDIS=1 "$venv/bin/python" -m pytest --junitxml="$report" "$@"
"$venv/bin/python" scripts/no_skips.py "$report"

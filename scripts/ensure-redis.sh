#!/usr/bin/env bash
# Make sure a Redis server answers at GEOFENCE_TEST_REDIS_URL's host and port
# (default 127.0.0.1:6379): start one on loopback if none does, install it if missing.
set -euo pipefail
python=${PYTHON:-python3}
url=${GEOFENCE_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}

answers() {
    "$python" - "$url" <<'PY'
import sys, redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, socket_timeout=1).ping()
except Exception:
    sys.exit(1)
PY
}

answers && exit 0
if ! command -v redis-server >/dev/null; then
    echo "redis-server missing: installing it from the OS packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
port=$("$python" -c "import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)" "$url")
# durable as the README says Redis should run, its files in a directory of its own
dir=${TMPDIR:-/tmp}/geofence-redis-$port
mkdir -p "$dir"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --appendonly yes --appendfsync everysec
for _ in $(seq 50); do answers && exit 0; sleep 0.1; done
echo "Redis did not start on port $port" >&2
exit 1

#!/usr/bin/env bash
# Make sure a Redis Cluster of 3 primaries and 3 replicas answers on loopback ports
# GEOFENCE_CLUSTER_PORT..+5 (default 30001-30006): start one if none does, install
# redis-server if missing. Each node runs durable (appendonly, fsync every second) with its
# files in a directory of its own under $TMPDIR, and a short cluster-node-timeout (2 s) so
# that a replica takes over a dead primary within a few seconds in the tests. Idempotent:
# a cluster that already answers with every slot served is left as it is. Prints the URL
# the service and the tests take (GEOFENCE_REDIS_URL, GEOFENCE_TEST_CLUSTER_URL).
set -euo pipefail
first=${GEOFENCE_CLUSTER_PORT:-30001}
ports=$(seq "$first" $((first + 5)))
base=${TMPDIR:-/tmp}/geofence-cluster-$first
url="redis+cluster://$(for p in $ports; do printf '127.0.0.1:%s,' "$p"; done | sed 's/,$//')"

healthy() {
    local info
    info=$(redis-cli -p "$first" cluster info 2>/dev/null) || return 1
    grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_slots_ok:16384' <<<"$info" &&
        grep -q '^cluster_known_nodes:6' <<<"$info" &&
        [ "$(redis-cli -p "$first" cluster nodes | grep -c ' slave ')" = 3 ]
}

if ! command -v redis-server >/dev/null; then
    echo "redis-server missing: installing it from the OS packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if healthy; then
    echo "$url"
    exit 0
fi

for port in $ports; do
    redis-cli -p "$port" ping >/dev/null 2>&1 && continue
    dir=$base/$port
    mkdir -p "$dir"
    # a node that never joined (a create that failed) starts again from nothing
    [ -s "$dir/nodes.conf" ] || rm -rf "${dir:?}"/*
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --appendonly yes --appendfsync everysec --logfile "$dir/redis.log"
done
for port in $ports; do
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

# nodes that know no other yet: a new cluster to create (restarted ones rejoin by themselves)
if [ "$(redis-cli -p "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')" = 1 ]; then
    redis-cli --cluster create $(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 1 --cluster-yes >/dev/null
fi
for _ in $(seq 100); do
    if healthy; then
        echo "$url"
        exit 0
    fi
    sleep 0.1
done
echo "the Redis Cluster on ports $first-$((first + 5)) did not become healthy" >&2
exit 1

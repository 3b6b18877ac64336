"""``GEOFENCE_REDIS_WAIT_REPLICAS``: a write that puts notifications in the outbox is
followed by WAIT on the connection it went on; fewer replicas than asked acknowledging it
within half the timeout is BackendUnavailable (503). A primary and its replica of the
test's own, on loopback; the replica hung (SIGSTOP) acknowledges nothing.

WAIT counts the writes of its own connection, so the store sends it on the connection
the write went on: a lane's, or the client's pipeline when every lane is busy
(``lanes=0`` here).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from geofence.adapters.redis import RedisStore
from geofence.domain.errors import BackendUnavailable
from tests.contract.store_builders import notification, profile, visit_state
from tools.processes import RedisServer
from tools.redis_cluster import RedisCluster, free_base, running_redis_cluster

pytestmark = pytest.mark.redis

TIMEOUT_S = 1.0  # the store's; WAIT's own is half of it


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    logs = tmp_path_factory.mktemp("wait")
    primary = RedisServer(logs, name="primary", durable=False)
    replica = RedisServer(logs, name="replica", durable=False, replica_of=primary.port)
    try:
        primary.start()
        primary.wait_ready()
        replica.start()
        replica.wait_ready()
        wait_in_sync(replica)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def wait_in_sync(replica: RedisServer, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    with replica.client() as client:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)


def store_on(primary: RedisServer, *, wait_replicas: int, lanes: int = 2) -> RedisStore:
    return RedisStore.from_url(
        primary.url,
        timeout_s=TIMEOUT_S,
        prefix="gftest-wait",
        wait_replicas=wait_replicas,
        lanes=lanes,
    )


@pytest.fixture
async def replica_client(
    servers: tuple[RedisServer, RedisServer],
) -> AsyncIterator[aioredis.Redis]:
    _, replica = servers
    client = aioredis.Redis.from_url(replica.url, socket_timeout=2)
    yield client
    await client.aclose()


async def registered_on_both(primary: RedisServer, ref: str) -> None:
    """The device created through a store of its own, and on the replica too."""
    setup = store_on(primary, wait_replicas=0)
    try:
        await setup.create_device(profile(ref))
        assert await setup.client.execute_command("WAIT", 1, 5000) == 1
    finally:
        await setup.close()


async def write_with_notification(store: RedisStore, ref: str, nid: str) -> bool:
    await store.create_device(profile(ref))
    return await store.save_state(ref, visit_state(), 0, outbox=[notification(nid, ref)])


@pytest.mark.parametrize("lanes", [2, 0])  # on a lane, and through the client's pipeline
async def test_an_acknowledged_notification_is_on_the_replica(
    servers: tuple[RedisServer, RedisServer], replica_client: aioredis.Redis, lanes: int
) -> None:
    primary, _ = servers
    store = store_on(primary, wait_replicas=1, lanes=lanes)
    try:
        ref = f"wait-on-{lanes}"
        assert await write_with_notification(store, ref, f"n-{ref}")
        outbox = store.keys.outbox(store.keys.shard_of(ref))
        # WAIT returned 1: the replica has applied the write, read from it at once
        assert await replica_client.exists(*outbox) >= 1
        assert await replica_client.exists(store.keys.state(ref)) == 1
    finally:
        await store.close()


@pytest.mark.parametrize("lanes", [2, 0])
async def test_no_replica_acknowledging_is_backend_unavailable(
    servers: tuple[RedisServer, RedisServer], lanes: int
) -> None:
    primary, replica = servers
    ref = f"wait-hung-{lanes}"
    await registered_on_both(primary, ref)
    store = store_on(primary, wait_replicas=1, lanes=lanes)  # its connections wrote nothing
    replica.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await store.save_state(ref, visit_state(), 0, outbox=[notification(f"n-{ref}", ref)])
        assert TIMEOUT_S * 0.4 <= time.monotonic() - started <= TIMEOUT_S * 3
        # a write without notifications does not wait
        assert await store.save_state(ref, visit_state(200.0), 1)
    finally:
        replica.resume()
        await store.close()


async def test_asking_more_replicas_than_there_are_is_backend_unavailable(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    primary, _ = servers
    store = store_on(primary, wait_replicas=2)
    try:
        with pytest.raises(BackendUnavailable, match="1 of 2 replicas"):
            await write_with_notification(store, "wait-two", "n-wait-two")
    finally:
        await store.close()


async def test_off_by_default_a_hung_replica_is_not_waited_for(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = servers
    store = store_on(primary, wait_replicas=0)
    replica.pause()
    try:
        started = time.monotonic()
        assert await write_with_notification(store, "wait-off", "n-wait-off")
        assert time.monotonic() - started < TIMEOUT_S * 0.4
    finally:
        replica.resume()
        await store.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One primary and its replica, as a Redis Cluster."""
    logs = tmp_path_factory.mktemp("wait-cluster")
    with running_redis_cluster(
        logs, base_port=free_base(2), primaries=1, replicas=1, durable=False
    ) as cluster:
        yield cluster


async def test_on_a_cluster_the_write_waits_for_its_primarys_replica(
    redis_cluster: RedisCluster,
) -> None:
    """WAIT goes to the primary of the write's slot, in one pipeline with the write."""
    _, replica = redis_cluster.nodes
    store = RedisStore.on_cluster(
        redis_cluster.url, timeout_s=TIMEOUT_S, prefix="gftest-wait", wait_replicas=1
    )
    try:
        assert await write_with_notification(store, "wait-cluster", "n-wait-cluster")
        replica.pause()
        try:
            await store.create_device(profile("wait-cluster-hung"))
            with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
                await write_with_notification(store, "wait-cluster-hung", "n-hung")
        finally:
            replica.resume()
    finally:
        await store.close()

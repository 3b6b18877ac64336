"""On a Redis Cluster a flush's write and read go as one cluster pipeline: each primary
gets its shards' script calls in order on one connection, one round trip per primary.
A cluster of the test's own (2 primaries, a replica each, on loopback), whose script
caches the tests empty (``SCRIPT FLUSH``), so the pipeline meets NOSCRIPT: the calls
the server did not run are sent again after the script is loaded, a read after its
shard's write, and none that ran is sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from geofence.adapters.redis import LOAD_STATES, SAVE_STATES, SLOTS, RedisStore
from geofence.domain.conversions import Eligible
from geofence.domain.errors import BackendUnavailable
from geofence.ports import StateWrite
from tests.contract.store_builders import notification, profile, visit_state
from tools.redis_cluster import ClusterNode, RedisCluster, free_base, running_redis_cluster

pytestmark = pytest.mark.redis

DEVICES = 40  # over about 37 of the 256 shards, on both primaries
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    logs = tmp_path_factory.mktemp("pipeline-cluster")
    base = free_base(4, start=31_000, stop=31_990)
    with running_redis_cluster(
        logs, base_port=base, primaries=2, replicas=1, durable=False
    ) as cluster:
        yield cluster


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    made = RedisStore.on_cluster(
        redis_cluster.url, timeout_s=TIMEOUT_S, prefix="gftest-pipe", wait_replicas=1
    )
    yield made
    for node in redis_cluster.nodes[: redis_cluster.primaries]:
        with node.client() as client:
            client.flushall()
    await made.close()


def refs_of(test: str) -> list[str]:
    return [f"{test}-{i}" for i in range(DEVICES)]


async def created(store: RedisStore, refs: list[str]) -> None:
    for ref in refs:
        await store.create_device(profile(ref))


def writes_of(refs: list[str], *, notify: bool = False) -> list[StateWrite]:
    return [
        StateWrite(
            ref=ref,
            state=visit_state(),
            version=0,
            outbox=[notification(f"n-{ref}", ref)] if notify else (),
        )
        for ref in refs
    ]


def entry(ref: str) -> Eligible:
    return Eligible(offer_id="o1", store_id=f"store-{ref}", at=100.0, group="treated", window_s=600)


def scripts_only(cluster: RedisCluster, *kept: str) -> None:
    """Every primary's script cache emptied, then ``kept`` loaded again."""
    for node in cluster.nodes[: cluster.primaries]:
        with node.client() as client:
            client.script_flush()
            for script in kept:
                client.script_load(script)


def ran(nodes: list[ClusterNode], command: str) -> int:
    """How many ``command`` the nodes have run without an error (``INFO commandstats``;
    a NOSCRIPT answered is a failed call)."""
    total = 0
    for node in nodes:
        with node.client() as client:
            stats: dict[str, Any] = client.info("commandstats")
        own = stats.get(f"cmdstat_{command}", {})
        total += int(own.get("calls", 0)) - int(own.get("failed_calls", 0))
    return total


def shards_of(store: RedisStore, refs: list[str]) -> int:
    return len({store.keys.shard_of(ref) for ref in refs})


async def test_the_shards_of_a_batch_go_to_both_primaries(
    store: RedisStore, redis_cluster: RedisCluster
) -> None:
    """The test's batches do span the primaries (each holds an equal range of the
    slots), else the cases below prove less."""
    slots = {key_slot(store.keys.state(ref).encode()) for ref in refs_of("spread")}
    assert {slot * redis_cluster.primaries // SLOTS for slot in slots} == {0, 1}


@pytest.mark.parametrize(
    ("kept", "runs"),
    [
        pytest.param((SAVE_STATES, LOAD_STATES), 2, id="both known"),
        pytest.param((), 2, id="none known: every call again"),
        pytest.param((LOAD_STATES,), 3, id="no write script: writes again, reads after them"),
        pytest.param((SAVE_STATES,), 2, id="no read script: the reads again"),
    ],
)
async def test_a_script_the_server_did_not_know_is_loaded_and_its_calls_sent_again(
    store: RedisStore, redis_cluster: RedisCluster, kept: tuple[str, ...], runs: int
) -> None:
    """Each device written once (a write run twice would answer "conflict": its version
    moved on), and read after its write (version 1), whichever scripts were missing.
    ``runs``: the script calls that ran, per shard: a write and a read, and the read
    again when the write had to be sent again."""
    refs = refs_of(f"noscript-{len(kept)}-{runs}")
    await created(store, refs)
    primaries = redis_cluster.nodes[: redis_cluster.primaries]
    scripts_only(redis_cluster, *kept)
    ran_before = ran(primaries, "evalsha")
    saved, loaded = await store.save_then_load(writes_of(refs), refs)
    assert ran(primaries, "evalsha") - ran_before == runs * shards_of(store, refs)
    assert saved == ["written"] * DEVICES
    assert [stored.version for _, stored in loaded] == [1] * DEVICES
    assert [p.ref if p else None for p, _ in loaded] == refs
    assert [s.version for s in await store.load_states(refs)] == [1] * DEVICES


async def test_one_wait_per_primary_and_a_hung_replica_is_unavailable(
    store: RedisStore, redis_cluster: RedisCluster
) -> None:
    """Writes with notifications on many shards: one WAIT per primary after them, not
    one per shard; with one primary's replica hung, BackendUnavailable."""
    refs = refs_of("wait")
    await created(store, refs)
    primaries = redis_cluster.nodes[: redis_cluster.primaries]
    waits_before = ran(primaries, "wait")
    saved, _ = await store.save_then_load(writes_of(refs, notify=True), [])
    assert saved == ["written"] * DEVICES
    assert ran(primaries, "wait") - waits_before == redis_cluster.primaries
    hung = redis_cluster.replica_of(primaries[1])
    others = refs_of("wait-hung")
    await created(store, others)
    hung.pause()
    try:
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await store.save_then_load(writes_of(others, notify=True), [])
    finally:
        hung.resume()


async def test_reads_and_entries_of_many_shards_answer_in_the_order_asked(
    store: RedisStore, redis_cluster: RedisCluster
) -> None:
    """Profiles, states and eligible entries of devices over many shards, each kind in
    one pipeline, with the scripts unknown at first: every answer at its device's place,
    a device that does not exist included."""
    refs = refs_of("order")
    await created(store, refs)
    await store.save_states(writes_of(refs[::2]))
    asked = [*reversed(refs), "no-such-device"]
    scripts_only(redis_cluster)
    profiles = await store.get_devices(asked)
    assert [p.ref if p else None for p in profiles] == [*reversed(refs), None]
    states = await store.load_states(asked)
    assert [s.version for s in states] == [1 - refs.index(r) % 2 for r in reversed(refs)] + [0]
    scripts_only(redis_cluster)
    await store.remember_eligible([(ref, entry(ref)) for ref in refs])
    for ref in refs[:5]:
        assert await store.take_eligible(ref, 200.0, f"store-{ref}") == entry(ref)

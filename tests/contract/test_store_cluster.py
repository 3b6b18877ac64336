"""The state store on a Redis Cluster, where a device's slot, an offer's budget and the
catalogue are on different nodes: the spread of the shards over the primaries, budgets
under concurrency through several clients, a catalogue change seen by another service,
the outbox shared by several claimers, and no command sent twice."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from geofence.adapters.redis import CLUSTER_SHARDS, SHARDS, SLOTS, RedisStore, shard_tags
from geofence.bootstrap import catalogue_service
from geofence.config import Settings
from geofence.domain.errors import BackendUnavailable
from geofence.metrics import Metrics
from geofence.service.catalogue import CatalogueService
from tests.conftest import CLUSTER_URL, drop_prefix
from tests.contract.store_builders import fence, notification, profile, visit_state

pytestmark = pytest.mark.redis


def primaries_ranges(primaries: int) -> list[tuple[int, int]]:
    """The slot range of each primary as ``redis-cli --cluster create`` splits them
    (redis-cli.c: ``clusterManagerCommandCreate``)."""
    per_node = SLOTS / primaries
    ranges, first, cursor = [], 0, 0.0
    for i in range(primaries):
        last = round(cursor + per_node - 1)
        if last > SLOTS - 1 or i == primaries - 1:
            last = SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per_node
    return ranges


@pytest.mark.parametrize("shards", [CLUSTER_SHARDS, 512, 1024])
@pytest.mark.parametrize("primaries", range(3, 31))
def test_the_shards_spread_evenly_over_the_primaries(shards: int, primaries: int) -> None:
    slots = [key_slot(f"x:{{{tag}}}:y".encode()) for tag in shard_tags(shards)]
    assert slots == [n * SLOTS // shards for n in range(shards)]
    ranges = primaries_ranges(primaries)
    assert sum(last - first + 1 for first, last in ranges) == SLOTS
    held = [sum(first <= slot <= last for slot in slots) for first, last in ranges]
    assert sum(held) == shards
    assert max(held) - min(held) <= 1, held  # an equal share, give or take one shard


def test_the_tags_of_sixteen_shards_are_the_names_of_a_single_redis() -> None:
    assert shard_tags(SHARDS) == tuple(f"s{n}" for n in range(SHARDS))
    # left to chance, they crowd: on 3 primaries one of them holds 8 of the 16
    slots = [key_slot(f"{{s{n}}}".encode()) for n in range(SHARDS)]
    held = [sum(a <= s <= b for s in slots) for a, b in primaries_ranges(3)]
    assert max(held) - min(held) > 1


async def test_a_cluster_store_uses_the_cluster_layout(cluster_store_factory: Any) -> None:
    store: RedisStore = await cluster_store_factory()
    assert store.cluster
    assert store.keys.shards == CLUSTER_SHARDS
    assert await store.claim_layout() == CLUSTER_SHARDS
    other: RedisStore = await cluster_store_factory(prefix=store.keys.prefix, shards=64)
    assert await other.claim_layout() == CLUSTER_SHARDS  # the first count stays recorded


# Counts its calls in a key, slowly: a call sent twice would count 2.
COUNT_SLOWLY = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop
"""


async def test_a_timed_out_call_is_not_sent_again(cluster_store_factory: Any) -> None:
    """A script that timed out may have run: no retry (it would count twice)."""
    await cluster_store_factory()  # skips, or fails, without a cluster
    store = RedisStore.on_cluster(CLUSTER_URL, timeout_s=0.1)
    key = f"gftest-once-{uuid.uuid4().hex[:8]}"
    try:
        slow = store.client.register_script(COUNT_SLOWLY)
        with pytest.raises((rexc.TimeoutError, TimeoutError)):
            await slow(keys=[key], args=[300])
        await asyncio.sleep(0.6)  # a second try, had there been one, is over by then
        assert await store.client.get(key) == b"1"
        assert isinstance(store.client, RedisCluster)
        assert store.client.retry.get_retries() == 0
    finally:
        await store.client.delete(key)
        await store.close()


async def test_a_cluster_that_does_not_answer_is_unavailable() -> None:
    store = RedisStore.on_cluster("redis+cluster://127.0.0.1:1", timeout_s=0.5)
    try:
        with pytest.raises(BackendUnavailable):
            await store.get_device("ref1")
    finally:
        await store.close()


@pytest.mark.parametrize("stale", [0, 100])
async def test_a_budget_is_never_overspent_by_concurrent_writers(
    cluster_store_factory: Any, stale: int
) -> None:
    """300 devices, each written once, concurrently, through one of 4 clients, each
    reserving a unit of one offer's budget of 100 (its own slot) before its write (the
    device's slot) and giving it back when the write loses. With no write lost, exactly
    100 are spent and in the outbox. With ``stale`` writes lost (a stale version), never
    more than 100, and every unit spent is a notification in the outbox: a unit held by
    a write that then loses can turn another device away meanwhile (under, never over)."""
    first: RedisStore = await cluster_store_factory()
    stores = [first, *[await cluster_store_factory(prefix=first.keys.prefix) for _ in range(3)]]
    refs = [f"dev{n}" for n in range(300)]
    for ref in refs:
        await first.create_device(profile(ref))
    losing = set(random.Random(7).sample(refs, stale))

    async def one(n: int, ref: str) -> bool:
        store = stores[n % len(stores)]
        if not await store.reserve_budget("o1", 100):
            return False
        version = 5 if ref in losing else 0  # 5: another write won meanwhile
        outbox = [notification(f"n-{ref}", ref)]
        written = await store.save_state(ref, visit_state(), version, outbox=outbox)
        if not written:
            await store.release_budget("o1")
        return bool(written)

    sent = sum(await asyncio.gather(*(one(n, ref) for n, ref in enumerate(refs))))
    spent = (await first.budget_spent(["o1"]))["o1"]
    assert spent == sent == await first.outbox_depth()
    if stale:
        assert 0 < spent <= 100
    else:
        assert spent == 100
    print(f"budget 100, {stale} writes lost: {spent} spent and sent")  # noqa: T201


async def test_a_catalogue_change_reaches_another_service(
    cluster_store_factory: Any, settings: Settings
) -> None:
    """Two services on the cluster: a change through one is installed by the other by
    polling the version key, within a few poll periods."""
    first: RedisStore = await cluster_store_factory()
    second: RedisStore = await cluster_store_factory(prefix=first.keys.prefix)
    ours, theirs = (catalogue_service(settings, s, Metrics()) for s in (first, second))
    await first.replace_catalogue([fence("a")])
    for service in (ours, theirs):
        await service.start()
    stop = asyncio.Event()
    watching = asyncio.create_task(theirs.watch(stop))
    try:
        await first.replace_catalogue([fence("a"), fence("b")])
        assert await seen(theirs, version=2, within_s=settings.catalogue_poll_s * 20)
        assert theirs.index is not None
    finally:
        stop.set()
        await watching
        for service in (ours, theirs):
            await service.uploads.close()


async def seen(service: CatalogueService, *, version: int, within_s: float) -> bool:
    loop = asyncio.get_running_loop()
    until = loop.time() + within_s
    while loop.time() < until:
        if service.loaded is not None and service.loaded.version == version:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_claimers_share_the_outbox_and_a_dead_ones_items_come_back(
    cluster_store_factory: Any,
) -> None:
    """Three claimers on their own clients: each item is claimed once within its lease,
    all are delivered; the items of a claimer that died come back after the lease."""
    first: RedisStore = await cluster_store_factory()
    stores = [first, *[await cluster_store_factory(prefix=first.keys.prefix) for _ in range(3)]]
    ids = set()
    for n in range(60):
        ref = f"dev{n}"
        await first.create_device(profile(ref))
        outbox = [notification(f"{ref}-{k}", ref) for k in range(3)]
        ids |= {o.notification_id for o in outbox}
        await first.save_state(ref, visit_state(), 0, outbox=outbox)
    dead, *claimers = stores
    died_with = {i.id for i in await dead.claim_outbox(5_000.0, 30, 10)}
    assert len(died_with) == 10

    async def claim_all(store: RedisStore, now: float, expected: int) -> list[str]:
        """Claim and settle until every claimer together has ``expected`` items."""
        taken: list[str] = []
        while len(claimed) < expected:
            items = await store.claim_outbox(now, 30, 7)
            taken += [i.id for i in items]
            claimed.extend(i.id for i in items)
            for item in items:
                await store.settle(item)
            await asyncio.sleep(0 if items else 0.01)
        return taken

    claimed: list[str] = []
    expected = len(ids) - len(died_with)
    rounds = await asyncio.wait_for(
        asyncio.gather(*(claim_all(s, 5_000.0, expected) for s in claimers)), 30
    )
    assert len(claimed) == len(set(claimed))  # none claimed twice within its lease
    assert set(claimed) == ids - died_with
    assert sum(1 for taken in rounds if taken) >= 2  # the work shared
    assert await first.outbox_depth() == len(died_with)  # leased, not lost
    claimed.clear()
    after = [claim_all(s, 5_031.0, len(died_with)) for s in claimers]
    await asyncio.wait_for(asyncio.gather(*after), 30)
    assert sorted(claimed) == sorted(died_with)
    assert await first.outbox_depth() == 0


async def test_keys_of_every_kind_are_removed_from_every_primary(
    cluster_store_factory: Any,
) -> None:
    """The fixture's clean-up scans every primary: keys of many slots all go."""
    store: RedisStore = await cluster_store_factory()
    prefix = f"gftest-{uuid.uuid4().hex[:12]}"
    keys = [f"{prefix}:{{t{n}}}:k" for n in range(50)]
    async with store.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.set(key, 1, ex=60)
        await pipe.execute()
    await drop_prefix(store.client, prefix)
    assert [k async for k in store.client.scan_iter(match=f"{prefix}:*")] == []

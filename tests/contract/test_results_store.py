"""The state store's part of issue 27, on the memory store and on real Redis: counters by
bucket with their retention, eligible entries for attribution (kept with the device, with
a TTL, taken once, erased with it), and the catalogue's version history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import RedisStore
from geofence.domain.conversions import MAX_KEPT, Eligible
from geofence.ports import HISTORY_KEPT, StateStore
from tests.contract.store_builders import fence, profile

DAY_S = 86_400


def eligible(at: float, offer_id: str = "o1", store_id: str = "s1", **kw: Any) -> Eligible:
    base: dict[str, Any] = {"group": "treated", "window_s": 7 * DAY_S}
    return Eligible(offer_id=offer_id, store_id=store_id, at=at, **(base | kw))


async def counts_ttl(store: StateStore, bucket: int) -> float | None:
    if isinstance(store, MemoryStore):
        return store.counts_ttl(bucket)
    assert isinstance(store, RedisStore)
    return float(await store.client.ttl(store.keys.counts(bucket)))


# counters by bucket


async def test_each_bucket_is_read_on_its_own(store: StateStore) -> None:
    await store.add_counts(0, {"entries|store|a": 2})
    await store.add_counts(3_600, {"entries|store|a": 1, "control|offer|o1": 4})
    await store.add_counts(3_600, {"entries|store|a": 1})
    got = await store.read_buckets([0, 3_600, 7_200])
    assert got == {0: {"entries|store|a": 2}, 3_600: {"entries|store|a": 2, "control|offer|o1": 4}}


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_counters_expire_after_the_retention(backend: str, redis_store_factory: Any) -> None:
    ttl_s = 3 * DAY_S
    store = (
        MemoryStore(stats_ttl_s=ttl_s)
        if backend == "memory"
        else await redis_store_factory(stats_ttl_s=ttl_s)
    )
    await store.add_counts(0, {"entries|store|a": 1})
    ttl = await counts_ttl(store, 0)
    assert ttl is not None
    assert ttl_s - 60 < ttl <= ttl_s


async def test_memory_counters_are_gone_after_the_retention() -> None:
    now = [1_000.0]
    store = MemoryStore(stats_ttl_s=DAY_S, clock=lambda: now[0])
    await store.add_counts(0, {"entries|store|a": 1})
    now[0] += DAY_S + 1
    assert await store.read_buckets([0]) == {}


# eligible entries and attribution


async def test_the_latest_eligible_entry_in_its_window_is_taken_once(store: StateStore) -> None:
    await store.create_device(profile())
    t = 1_000_000.0
    kept = [eligible(t), eligible(t + 100, offer_id="o2", group="control"), eligible(t + 200)]
    await store.remember_eligible([("ref1", e) for e in kept])
    taken = await store.take_eligible("ref1", t + 150, None)
    assert taken == kept[1]
    assert await store.take_eligible("ref1", t + 150, None) is None  # it and older: gone
    assert await store.take_eligible("ref1", t + 300, None) == kept[2]


async def test_outside_the_window_or_at_another_store_is_not_attributed(
    store: StateStore,
) -> None:
    await store.create_device(profile())
    t = 1_000_000.0
    await store.remember_eligible([("ref1", eligible(t, window_s=3_600))])
    assert await store.take_eligible("ref1", t + 3_601, None) is None
    assert await store.take_eligible("ref1", t - 1, None) is None
    assert await store.take_eligible("ref1", t + 10, "s2") is None
    assert await store.take_eligible("ref1", t + 10, "s1") == eligible(t, window_s=3_600)


async def test_a_concurrent_conversion_takes_an_entry_only_once(store: StateStore) -> None:
    await store.create_device(profile())
    await store.remember_eligible([("ref1", eligible(1_000.0))])
    taken = await asyncio.gather(*(store.take_eligible("ref1", 2_000.0, None) for _ in range(5)))
    assert sum(t is not None for t in taken) == 1


async def test_eligible_entries_have_the_window_as_ttl_and_go_with_the_device(
    store: StateStore,
) -> None:
    await store.create_device(profile())
    await store.remember_eligible([("ref1", eligible(1_000.0, window_s=DAY_S))])
    await store.remember_eligible([("ref1", eligible(2_000.0, window_s=3_600))])
    keys = await store.device_keys("ref1")
    [ttl] = [v for k, v in keys.items() if k.endswith("eligible")]
    assert ttl is not None
    assert DAY_S - 60 < ttl <= DAY_S
    await store.erase_device("ref1")
    assert await store.device_keys("ref1") == {}
    assert await store.take_eligible("ref1", 2_500.0, None) is None


async def test_eligible_entries_go_with_the_consent_to_offers(store: StateStore) -> None:
    await store.create_device(profile())
    await store.remember_eligible([("ref1", eligible(1_000.0))])
    await store.erase_notifications("ref1")
    assert not [k for k in await store.device_keys("ref1") if k.endswith("eligible")]
    assert await store.take_eligible("ref1", 2_000.0, None) is None


async def test_no_eligible_entry_is_kept_for_an_erased_device(store: StateStore) -> None:
    await store.remember_eligible([("ghost", eligible(1_000.0))])
    assert await store.device_keys("ghost") == {}


async def test_only_the_latest_eligible_entries_are_kept(store: StateStore) -> None:
    await store.create_device(profile())
    await store.remember_eligible([("ref1", eligible(float(t))) for t in range(MAX_KEPT + 5)])
    assert await store.take_eligible("ref1", 4.5, None) is None  # the oldest were dropped
    assert await store.take_eligible("ref1", float(MAX_KEPT + 10), None) is not None


# the catalogue's history


async def test_every_catalogue_change_is_in_the_history_newest_first(store: StateStore) -> None:
    await store.replace_catalogue([fence("a"), fence("b"), fence("c")])
    await store.replace_catalogue([fence("a"), fence("b", tags=("new",)), fence("d")])
    await store.upsert_fence(fence("e"))
    await store.upsert_fence(fence("e", tags=("new",)))
    await store.upsert_fence(fence("e", tags=("new",)))
    await store.delete_fence("a")
    assert await store.delete_fence("nope") is None
    history = await store.catalogue_history(10)
    counts = [(c.version, c.stores, c.added, c.changed, c.removed) for c in history]
    assert counts == [
        (6, 3, 0, 0, 1),
        (5, 4, 0, 0, 0),
        (4, 4, 0, 1, 0),
        (3, 4, 1, 0, 0),
        (2, 3, 1, 1, 1),
        (1, 3, 3, 0, 0),
    ]
    assert history[0].at >= history[-1].at > 0
    assert await store.catalogue_version() == 6


async def test_the_history_is_bounded(store: StateStore) -> None:
    for n in range(HISTORY_KEPT + 3):
        await store.upsert_fence(fence(f"s{n}"))
    history = await store.catalogue_history(1_000)
    assert len(history) == HISTORY_KEPT
    assert history[0].version == HISTORY_KEPT + 3

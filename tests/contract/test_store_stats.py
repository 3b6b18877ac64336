"""The state store's StatsStore role: the aggregate counters (contract §6, stats).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from geofence.adapters.redis import COUNTS_TTL_S
from geofence.ports import StatsStore


async def test_counters_sum_over_buckets(store: StatsStore) -> None:
    await store.add_counts(0, {"entries|store|a": 2, "entries|offer|o1": 1})
    await store.add_counts(3_600, {"entries|store|a": 1})
    await store.add_counts(7_200, {"entries|store|b": 5})
    assert await store.read_counts([0, 3_600]) == {"entries|store|a": 3, "entries|offer|o1": 1}
    assert await store.read_counts([]) == {}


async def test_redis_counters_are_added_atomically_and_kept_a_while(
    any_redis_factory: Any,
) -> None:
    store = await any_redis_factory()
    await asyncio.gather(*(store.add_counts(0, {"a": 1, "b": 2}) for _ in range(20)))
    assert await store.read_counts([0]) == {"a": 20, "b": 40}
    ttl = await store.client.ttl(store.keys.counts(0))
    assert COUNTS_TTL_S - 60 < ttl <= COUNTS_TTL_S

"""The state store's DeviceStore role: device profiles, their TTLs and their erasure (contract §4).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from geofence.adapters.redis import RedisStore, shard_tags
from geofence.domain.model import DeviceState
from geofence.ports import DeviceStore, StateStore
from tests.contract.store_builders import (
    dead_lettered,
    notification,
    profile,
    visit_state,
)


async def test_create_device_once(store: DeviceStore) -> None:
    assert await store.create_device(profile()) is True
    assert await store.create_device(profile(tier="gold")) is False
    stored = await store.get_device("ref1")
    assert stored == profile()
    assert await store.get_device("nobody") is None


async def test_put_device_replaces_profile(store: DeviceStore) -> None:
    await store.create_device(profile())
    await store.put_device(profile(tier="gold", segments=("vip",)))
    stored = await store.get_device("ref1")
    assert stored is not None
    assert stored.tier == "gold"
    assert stored.segments == ("vip",)


async def test_put_device_never_brings_back_an_erased_device(store: DeviceStore) -> None:
    assert await store.put_device(profile()) is False
    await store.create_device(profile())
    assert await store.put_device(profile(tier="gold")) is True
    await store.erase_device("ref1")
    assert await store.put_device(profile(tier="silver")) is False
    assert await store.get_device("ref1") is None
    assert await store.device_keys("ref1") == {}


async def test_put_device_refreshes_the_ttls(store: StateStore) -> None:
    store.device_ttl_s = 100  # type: ignore[attr-defined]
    store.position_ttl_s = 50  # type: ignore[attr-defined]
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    store.device_ttl_s = 10_000  # type: ignore[attr-defined]
    await store.put_device(profile(tier="gold"))
    ttls = sorted(t or 0 for t in (await store.device_keys("ref1")).values())
    # profile and visit state start again; the position keeps its own, shorter life
    assert len(ttls) == 3
    assert 0 < ttls[0] <= 50
    assert ttls[1] > 100
    assert ttls[2] > 100


async def test_every_device_key_has_a_ttl(store: StateStore) -> None:
    await store.create_device(profile())
    assert await store.save_state("ref1", visit_state(), 0)
    keys = await store.device_keys("ref1")
    assert len(keys) == 3
    assert all(ttl is not None and ttl > 0 for ttl in keys.values())


async def test_position_expires_sooner_than_visit_state(store: StateStore) -> None:
    store_ttls = {"device_ttl_s": 1000, "position_ttl_s": 10}
    for name, value in store_ttls.items():
        setattr(store, name, value)
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    ttls = sorted(t for t in (await store.device_keys("ref1")).values() if t is not None)
    assert ttls[0] <= 10  # the position's TTL, set to 10 s above
    assert ttls[-1] >= 900  # the device's


async def test_erase_device_removes_every_key_and_is_idempotent(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.create_device(profile("other"))
    await store.erase_device("ref1")
    await store.erase_device("ref1")
    assert await store.device_keys("ref1") == {}
    assert await store.get_device("ref1") is None
    assert (await store.load_state("ref1")).version == 0
    assert await store.get_device("other") is not None


async def test_erase_location_keeps_the_profile(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.erase_location("ref1")
    loaded = await store.load_state("ref1")
    assert loaded.state == DeviceState()
    # the version moves on, never back: a write computed before the erasure cannot land
    assert loaded.version > 1
    assert await store.save_state("ref1", visit_state(), 1) is False
    assert await store.get_device("ref1") is not None


@pytest.mark.redis
async def test_redis_keys_of_a_device_share_one_hash_tag(any_redis_factory: object) -> None:
    store: RedisStore = await any_redis_factory()  # type: ignore[operator]
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.save_state("ref1", visit_state(200.0), 1, outbox=[notification("n1")])
    keys = list(await store.device_keys("ref1"))
    assert len(keys) == 4  # profile, state, position, pending notifications
    tags = {k[k.index("{") : k.index("}") + 1] for k in keys}
    shard = store.keys.shard_of("ref1")
    tag = f"{{{shard_tags(store.keys.shards)[shard]}}}"
    assert tags == {tag}
    # on a single Redis, the names of the first releases
    assert store.cluster or tag == f"{{s{shard}}}"
    # the outbox the same script writes shares the tag, so the slot
    assert all(tag in k for k in store.keys.outbox(shard))
    assert len({key_slot(k.encode()) for k in [*keys, *store.keys.outbox(shard)]}) == 1


async def test_redis_pending_ids_live_as_long_as_the_profile(any_redis_factory: Any) -> None:
    """A profile refreshed by a patch keeps the ids erasure needs to find its notifications."""
    store = await any_redis_factory(device_ttl_s=100, dead_letter_ttl_s=50)
    await dead_lettered(store, "n1")
    store.device_ttl_s = 10_000
    await store.put_device(profile(tier="gold"))
    assert await store.client.ttl(store.keys.pending("ref1")) > 9_000

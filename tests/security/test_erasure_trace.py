"""Erasure leaves no trace (issue 23 item 7): after a device is erased, no key or value of
the store holds its push token, its raw id or its ref; after its consent to offers is
withdrawn, none of its notifications (queued or dead letters) is left.

The device gets two notifications through the app's own dispatcher: the push gateway
refuses the first (400: a dead letter) and asks to retry the second in an hour (it stays
in the outbox). Then every key under the store's prefix is read, whatever its type.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.domain.delivery import Attempt
from geofence.http.app import create_app
from geofence.ports import StateStore
from tests.conftest import SDK_KEY, admin
from tests.contract.test_delivery import ScriptedPush
from tests.http.test_offers_api import put_offer, walk_in
from tests.http.test_pings_api import ping_body, send

Client = TestClient[Any, Any]
DEVICE_ID = "erasure-trace-device-7f3a"
PUSH_TOKEN = "push-token-erasure-trace-5c1e"
IPANAINEN = "osm-way-88777737"  # 22 m from Rautamies (walk_in's store) in stores.geojson
IN_IPANAINEN = (60.1770628, 24.9496374)


async def app_with(aiohttp_client: Any, store: StateStore, settings: Settings) -> Client:
    """The app whose gateway refuses the first push and defers the second by an hour."""
    push = ScriptedPush(time.time, Attempt(status=400), Attempt(status=503, retry_after_s=3600))
    changed = settings.replace(stores="stores.geojson", quiet_hours="off")
    client: Client = await aiohttp_client(create_app(changed, store=store, push=push))
    return client


async def two_notifications(client: Client, store: StateStore) -> tuple[str, str]:
    """A device with a push token, one dead letter and one item in the outbox: its
    (device token, ref)."""
    await put_offer(client, "rautamies")
    await put_offer(client, "ipanainen", store_ids=[IPANAINEN])
    body = {"device_id": DEVICE_ID, "consent": {"location": True, "offers": True}}
    resp = await client.post(
        "/v1/devices",
        json={**body, "push_token": PUSH_TOKEN},
        headers={"Authorization": f"Bearer {SDK_KEY}"},
    )
    assert resp.status == 201, await resp.text()
    token: str = (await resp.json())["device_token"]
    await walk_in(client, token, DEVICE_ID)
    await until(lambda: _dead_letters(client), "the first notification dead-lettered")
    now = time.time()
    for ago in (160, 100, 30):  # a dwell of 130 s in the store next door
        ping = ping_body(DEVICE_ID, IN_IPANAINEN, now - ago)
        assert (await send(client, token, ping)).status == 200
    await until(lambda: _retried(store), "the second notification deferred")
    export = await client.get(f"/v1/devices/{DEVICE_ID}/export", headers=_bearer(token))
    ref: str = (await export.json())["device_ref"]
    return token, ref


async def _dead_letters(client: Client) -> bool:
    listed = await (await client.get("/v1/deadletters", headers=admin())).json()
    return len(listed["dead_letters"]) == 1


async def _retried(store: StateStore) -> bool:
    return await store.outbox_depth() == 1 and await store.claim_outbox(time.time(), 1, 1) == []


async def until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# reading everything a store holds


async def redis_contents(store: RedisStore) -> dict[str, bytes]:
    """Every key under the store's prefix with everything it holds, whatever its type."""
    client = store.client
    found: dict[str, bytes] = {}
    async for raw_key in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        key = _text(raw_key)
        kind = _text(await client.type(key))
        found[key] = b"\x00".join(await _values(client, key, kind))
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _values(client: Any, key: str, kind: str) -> list[bytes]:
    if kind == "string":
        return [await client.get(key)]
    if kind == "hash":
        return [part for pair in (await client.hgetall(key)).items() for part in pair]
    if kind == "zset":
        return list(await client.zrange(key, 0, -1))
    if kind == "list":
        return list(await client.lrange(key, 0, -1))
    if kind == "set":
        return list(await client.smembers(key))
    if kind == "stream":
        entries = await client.xrange(key)
        return [msgspec.msgpack.encode(entry) for entry in entries]
    raise AssertionError(f"a key of an unknown type: {key} ({kind})")


def memory_contents(store: MemoryStore) -> dict[str, bytes]:
    """Everything the memory store holds, one entry per attribute, as text."""
    return {name: repr(list(_walk(value))).encode() for name, value in vars(store).items()}


def _walk(value: Any) -> Iterator[Any]:
    if isinstance(value, msgspec.Struct):
        yield from _walk(msgspec.structs.asdict(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _walk(v)
    elif hasattr(value, "__dict__") and not callable(value):
        yield from _walk(vars(value))
    elif not callable(value):
        yield value


async def contents(store: StateStore) -> dict[str, bytes]:
    if isinstance(store, RedisStore):
        return await redis_contents(store)
    assert isinstance(store, MemoryStore)
    return memory_contents(store)


def holding(found: dict[str, bytes], *secrets: str) -> dict[str, list[str]]:
    """The keys whose name or contents hold any of ``secrets``, with which."""
    held = {
        key: [s for s in secrets if s in key or s.encode() in value] for key, value in found.items()
    }
    return {key: which for key, which in held.items() if which}


# the tests


async def test_erasure_leaves_no_push_token_id_or_ref(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client = await app_with(aiohttp_client, store, settings)
    token, ref = await two_notifications(client, store)
    before = holding(await contents(store), PUSH_TOKEN, ref)
    assert any(PUSH_TOKEN in which for which in before.values())  # the scan sees them
    assert len([k for k, which in before.items() if ref in which]) >= 2

    resp = await client.delete(f"/v1/devices/{DEVICE_ID}", headers=_bearer(token))
    assert resp.status == 204, await resp.text()

    assert holding(await contents(store), PUSH_TOKEN, DEVICE_ID, ref) == {}
    assert await store.outbox_depth() == 0


async def test_withdrawing_offers_leaves_no_notification_of_the_device(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client = await app_with(aiohttp_client, store, settings)
    token, ref = await two_notifications(client, store)
    patch = {"consent": {"offers": False}}
    resp = await client.patch(f"/v1/devices/{DEVICE_ID}", json=patch, headers=_bearer(token))
    assert resp.status == 200, await resp.text()

    listed = await (await client.get("/v1/deadletters", headers=admin())).json()
    assert listed["dead_letters"] == []
    assert await store.outbox_depth() == 0
    held = holding(await contents(store), PUSH_TOKEN, DEVICE_ID, ref)
    if isinstance(store, RedisStore):  # the device's own keys (its profile) are all that is left
        stem = store.keys.device(ref)
        assert held
        assert all(key.startswith(stem + ":") for key in held), held
        assert all(DEVICE_ID not in which for which in held.values())


@pytest.mark.redis
async def test_erasure_finds_dead_letters_after_the_device_was_refreshed(
    aiohttp_client: Any, redis_store_factory: Any, settings: Settings
) -> None:
    """A device whose profile a patch refreshed, long after its last ping: erasure still
    finds its dead letters (the ids it reads live as long as they do)."""
    store = await redis_store_factory(device_ttl_s=3)
    client = await app_with(aiohttp_client, store, settings)
    token, ref = await two_notifications(client, store)
    await asyncio.sleep(1.5)
    patch = {"tier": "gold"}
    resp = await client.patch(f"/v1/devices/{DEVICE_ID}", json=patch, headers=_bearer(token))
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(2)  # past the TTL set by the last ping, within the patch's
    resp = await client.delete(f"/v1/devices/{DEVICE_ID}", headers=_bearer(token))
    assert resp.status == 204, await resp.text()
    assert holding(await redis_contents(store), PUSH_TOKEN, DEVICE_ID, ref) == {}

"""Privacy (contract §4): pseudonyms in keys and logs, TTLs everywhere, erasure leaves nothing.

Every test here runs with logs captured at DEBUG; afterwards no captured record may hold a
raw device id (in any of its attributes), nor, written as the service writes it (every
field, the traceback included), a number with more than 3 decimals, whatever the test did.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from geofence import cli
from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.domain.model import DeviceState, Fix
from geofence.http import server
from geofence.http.access_log import RouteAccessLogger, access_logger
from geofence.http.app import create_app
from geofence.logs import JsonLines
from geofence.ports import StateStore
from geofence.service import devices as device_service
from tests.conftest import SDK_KEY, admin
from tests.http.test_pings_api import ping_body

Client = TestClient[Any, Any]
RAW_IDS = ("9F1C-raw-device-id-4417", "phone 7/ü", "dev-x1")
CONSENT = {"location": True, "offers": True}
PRECISE = re.compile(r"\d\.\d{4,}")


@pytest.fixture(autouse=True)
def _no_personal_data_in_logs(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    # aiohttp's access log of the test server quotes paths; `geofence serve` has its own
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    ours = [r for r in records if r.name != "aiohttp.access"]
    text = "\n".join(JsonLines().format(r) for r in ours)
    for raw in RAW_IDS:  # not even in a record's arguments or fields, written or not
        assert not [r for r in ours if raw in repr(vars(r))]
    if "client" in request.fixturenames:
        assert "device registered" in text  # the check below sees the real lines
    for raw in RAW_IDS:
        assert raw not in text
    assert not PRECISE.search(text), PRECISE.search(text)


def path(device_id: str, rest: str = "") -> str:
    return f"/v1/devices/{quote(device_id, safe='')}{rest}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, device_id: str, key: str = SDK_KEY) -> str:
    body = {"device_id": device_id, "consent": CONSENT, "timezone": "Europe/Helsinki"}
    resp = await client.post("/v1/devices", json=body, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    token: str = (await resp.json())["device_token"]
    return token


async def a_busy_device(client: Client, store: StateStore, device_id: str) -> str:
    """A device with a profile, visit state and a precise last position; returns its ref."""
    token = await register(client, device_id)
    ref = token.partition(".")[0]
    fix = Fix(lat=60.1698561, lng=24.9383792, ts=100.0)
    assert await store.save_state(ref, DeviceState(last_ts=100.0, last_fix=fix), 0)
    patch = {"consent": {"offers": False}, "tier": "gold"}
    assert (await client.patch(path(device_id), json=patch, headers=bearer(token))).ok
    assert (await client.get(path(device_id, "/export"), headers=admin())).ok
    return ref


async def redis_keys(store: RedisStore) -> list[str]:
    keys = [k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")]
    return [k.decode() for k in keys]


# keys and TTLs


async def test_every_device_key_has_a_ttl(client: Client, store: StateStore) -> None:
    for device_id in RAW_IDS:
        keys = await store.device_keys(await a_busy_device(client, store, device_id))
        assert len(keys) == 3
        assert all(ttl is not None and 0 < ttl <= 30 * 86_400 for ttl in keys.values())


@pytest.mark.redis
async def test_redis_key_names_hold_refs_only_and_all_expire(
    aiohttp_client: Any, redis_store_factory: Any, settings: Settings
) -> None:
    store: RedisStore = await redis_store_factory()
    client = await aiohttp_client(create_app(settings, store=store))
    refs = [await a_busy_device(client, store, device_id) for device_id in RAW_IDS]
    names = await redis_keys(store)
    device_keys = [k for k in names if ":d:" in k]
    assert len(device_keys) == 3 * len(RAW_IDS)
    assert {k.split(":d:")[1].split(":")[0] for k in device_keys} == set(refs)
    for name in device_keys:
        assert await store.client.ttl(name) > 0
        value = await store.client.dump(name)
        assert all(raw.encode() not in name.encode() + (value or b"") for raw in RAW_IDS)


@pytest.mark.redis
async def test_erasure_leaves_no_key_of_the_device(
    aiohttp_client: Any, redis_store_factory: Any, settings: Settings
) -> None:
    store: RedisStore = await redis_store_factory()
    client = await aiohttp_client(create_app(settings, store=store))
    erased = await a_busy_device(client, store, RAW_IDS[0])
    kept = await a_busy_device(client, store, RAW_IDS[1])
    assert (await client.delete(path(RAW_IDS[0]), headers=admin())).status == 204
    names = await redis_keys(store)
    assert not [k for k in names if erased in k]
    assert len([k for k in names if kept in k]) == 3


async def test_erasure_on_either_store(client: Client, store: StateStore) -> None:
    ref = await a_busy_device(client, store, RAW_IDS[2])
    assert (await client.delete(path(RAW_IDS[2]), headers=admin())).status == 204
    assert await store.device_keys(ref) == {}
    assert await store.get_device(ref) is None


# logs


async def test_notable_events_are_logged_by_ref(
    client: Client, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    ref = await a_busy_device(client, store, RAW_IDS[0])
    await client.delete(path(RAW_IDS[0]), headers=admin())
    lines = [r.getMessage() for r in caplog.records if r.name == "geofence.service.devices"]
    for event in ("device registered", "device updated", "device exported", "device erased"):
        assert any(line.startswith(f"{event} device={ref}") for line in lines), event


async def test_refused_tokens_are_logged_without_raw_ids(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    token = await register(client, RAW_IDS[0])
    await register(client, RAW_IDS[1])
    export = path(RAW_IDS[1], "/export")
    assert (await client.get(export, headers=bearer(token))).status == 404
    assert (await client.get(export, headers=bearer(token + "x"))).status == 401
    for device_id, status in ((RAW_IDS[1], 404), (RAW_IDS[0], 200)):  # another's, its own
        ping = ping_body(device_id, (60.1698561, 24.9383792), time.time())
        assert (await client.post("/v1/pings", json=ping, headers=bearer(token))).status == status
    own = path(RAW_IDS[0], "/token")
    assert (await client.post(own, headers=bearer(token))).status == 200  # revokes token
    assert (await client.post(own, headers=bearer(token))).status == 401
    assert "reason=other-device" in caplog.text
    assert "reason=invalid" in caplog.text


# development mode


async def test_development_mode_prints_generated_keys_once(
    aiohttp_client: Any,
    store: StateStore,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    device_service.development_id_secret.cache_clear()
    app = create_app(Settings(stores=""), store=store)
    printed = capsys.readouterr().err
    assert printed.count("dev-sdk-") == 1
    assert printed.count("dev-admin-") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("DEVELOPMENT MODE" in w and "KEYS" in w for w in warnings) == 1
    assert sum("GEOFENCE_ID_SECRET" in w for w in warnings) == 1
    sdk_key = re.search(r"sdk\s+(\S+)", printed)
    assert sdk_key is not None
    client = await aiohttp_client(app)
    await register(client, RAW_IDS[0], key=sdk_key.group(1))
    create_app(Settings(stores=""), store=store)  # the id key is made once per process
    assert sum("GEOFENCE_ID_SECRET" in r.getMessage() for r in caplog.records) == 1


def test_serve_has_an_access_log_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def serve(edge: server.EdgeRunner, *_args: Any, **_kwargs: Any) -> None:
        seen.update(edge._kwargs)

    monkeypatch.setattr(server, "_serve", serve)
    monkeypatch.setattr(cli, "setup_logging", lambda _level: None)
    monkeypatch.setattr(cli, "_use_uvloop", lambda: None)
    for name in ("ADMIN", "SDK", "INGEST"):
        monkeypatch.setenv(f"GEOFENCE_{name}_KEYS", f"test-key-{name}-0123456789")
    monkeypatch.setenv("GEOFENCE_ID_SECRET", "s")
    assert cli.main(["serve", "--stores", ""]) == 0
    assert "access_log" in seen
    assert seen["access_log"] is None
    assert cli.main(["serve", "--stores", "", "--access-log", "true"]) == 0
    assert seen["access_log"] is access_logger
    assert seen["access_log_class"] is RouteAccessLogger

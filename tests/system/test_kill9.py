"""kill -9 with notifications in flight: after a restart every one is delivered, and a
duplicate only ever comes under the same Idempotency-Key (contract §6: at-least-once)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from geofence.domain.delivery import verify
from tests.conftest import REDIS_URL, drop_prefix, redis_client_or_skip
from tests.fakes.gateway import GATEWAY
from tools.processes import (
    SERVE,
    Process,
    free_port,
    running,
    service_env,
    wait_http,
)

pytestmark = pytest.mark.redis

PUSH_SECRET = "sys-push-secret"
INSIDE = (60.1774, 24.9495)  # Rautamies in stores.geojson
OUTSIDE = (60.1790, 24.9480)
DEVICES = 12


def walk(device_id: str, now: float) -> list[dict[str, Any]]:
    steps = [(OUTSIDE, 400), (INSIDE, 300), (INSIDE, 240), (INSIDE, 170)]
    return [
        {"device_id": device_id, "lat": lat, "lon": lon, "accuracy_m": 8, "ts": now - ago}
        for (lat, lon), ago in steps
    ]


async def make_entries(session: aiohttp.ClientSession, base: str) -> set[str]:
    """Devices with push tokens, one batch that walks each into a store: its notifications."""
    sdk = {"Authorization": "Bearer sys-sdk-key-000001"}
    devices = [f"kill9-{i}" for i in range(DEVICES)]
    for d in devices:
        body = {"device_id": d, "consent": {"location": True, "offers": True}, "push_token": d}
        async with session.post(f"{base}/v1/devices", json=body, headers=sdk) as resp:
            assert resp.status == 201, await resp.text()
    offer = {
        "title": "Welcome",
        "body": "At {store_name}",
        "store_ids": ["osm-way-88777732"],
        "starts_at": 0,
        "ends_at": 4e9,
    }
    admin = {"Authorization": "Bearer sys-admin-key-0001"}
    async with session.put(f"{base}/v1/offers/welcome", json=offer, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
    now = time.time()
    pings = [p for d in devices for p in walk(d, now)]
    ingest = {"Authorization": "Bearer sys-ingest-key-0001"}
    async with session.post(
        f"{base}/v1/pings/batch", json={"pings": pings}, headers=ingest
    ) as resp:
        results = (await resp.json())["results"]
    return {n["notification_id"] for r in results for n in r["notifications"]}


async def gateway_calls(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/_control/calls") as resp:
        calls: list[dict[str, Any]] = await resp.json()
        return calls


async def delivered(session: aiohttp.ClientSession, url: str) -> set[str]:
    calls = await gateway_calls(session, url)
    return {c["json"]["notification_id"] for c in calls if c["status"] == 200}


async def test_kill_9_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    client: aioredis.Redis = await redis_client_or_skip()
    prefix = f"gftest-sys-{uuid.uuid4().hex[:8]}"
    gw_port, port = free_port(), free_port()
    gw_url, base = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{port}"
    gateway = Process("gateway", [*GATEWAY, "--port", str(gw_port)], {}, tmp_path)
    env = service_env(
        port,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        push_url=f"{gw_url}/push",
        push_secret=PUSH_SECRET,
        push_timeout_s=0.5,
    )
    service = Process("service", SERVE, env, tmp_path)
    try:
        with running(gateway, service):
            await check_kill9(gateway, service, gw_url, base)
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


async def check_kill9(gateway: Process, service: Process, gw_url: str, base: str) -> None:
    gateway.start()
    service.start()
    await wait_http(f"{gw_url}/_control/calls")
    await wait_http(f"{base}/readyz")
    async with aiohttp.ClientSession() as session:
        # every push waits 0.3 s before its 200: the kill lands while they are in flight
        script = [["hang", 0.3]] * (2 * DEVICES)
        async with session.post(f"{gw_url}/_control/script", json=script) as resp:
            assert resp.status == 200
        expected = await make_entries(session, base)
        service.kill9()
        assert len(expected) == DEVICES
        assert await delivered(session, gw_url) != expected  # some were still in flight
        service.start()
        await wait_http(f"{base}/readyz")
        deadline = time.monotonic() + 40
        while await delivered(session, gw_url) != expected:
            assert time.monotonic() < deadline, service.log()[-3000:]
            await asyncio.sleep(0.2)
        calls = await gateway_calls(session, gw_url)
    for call in calls:
        key = {k.lower(): v for k, v in call["headers"].items()}["idempotency-key"]
        assert key == call["json"]["notification_id"]
        signature = {k.lower(): v for k, v in call["headers"].items()}["x-geofence-signature"]
        verify(PUSH_SECRET, signature, call["body"].encode(), call["at"])
    assert {c["json"]["notification_id"] for c in calls} == expected

"""The slow-body flood against a real ``geofence serve`` (issue 23's black-box probe):
60 connections trickling bodies with made-up tokens, a small in-flight cap, and genuine
pings that must still be answered; then a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REDIS_URL, drop_prefix, redis_client_or_skip
from tests.http.test_pings_api import INSIDE, ping_body
from tests.security.conftest import CONSENT, Served, post_head
from tests.system.processes import SERVE, Process, free_port, service_env, wait_http

FLOODERS = 60
DEVICES = 4
PINGS_EACH = 10


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    redis_url, prefix = "", f"gftest-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        client = await redis_client_or_skip()
        redis_url = REDIS_URL
    port = free_port()
    # the strangers' limit as deployed (service_env turns it off for the other system tests)
    limits = {"max_inflight": 16, "stranger_rate_per_s": 5.0, "stranger_burst": 50}
    env = service_env(port, redis_url=redis_url, redis_prefix=prefix, **limits)
    process = Process("serve", SERVE, env, tmp_path)
    process.start()
    assert process.proc is not None
    try:
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        async with aiohttp.ClientSession() as session:
            yield Served(None, port, session)  # type: ignore[arg-type]  # no app in this process
        process.proc.terminate()
        assert process.proc.wait(timeout=30) == 0, process.log()[-4000:]
        assert "Traceback" not in process.log() and "ERROR" not in process.log()
    finally:
        process.stop()
        if request.param == "redis":
            await drop_prefix(client, prefix)
            await client.aclose()


async def register(served: Served, device_id: str) -> str:
    body = {"device_id": device_id, "consent": CONSENT}
    headers = {"Authorization": "Bearer sys-sdk"}
    async with served.session.post(f"{served.base}/v1/devices", json=body, headers=headers) as r:
        assert r.status == 201, await r.text()
        token: str = (await r.json())["device_token"]
        return token


async def trickle(served: Served, i: int, stop: asyncio.Event) -> None:
    try:
        _, writer = await served.send(post_head("/v1/pings", f"{i:08x}.made-up-{i}", 1000), b"{")
        while not stop.is_set() and not writer.is_closing():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        return


async def pings(served: Served, token: str, device_id: str) -> list[int]:
    statuses = []
    headers = {"Authorization": f"Bearer {token}"}
    start = time.time() - 600
    for i in range(PINGS_EACH):
        body = ping_body(device_id, INSIDE, start + i)
        async with served.session.post(f"{served.base}/v1/pings", json=body, headers=headers) as r:
            statuses.append(r.status)
    return statuses


async def test_a_slow_body_flood_leaves_genuine_pings_served(service: Served) -> None:
    tokens = {f"d{i}": await register(service, f"d{i}") for i in range(DEVICES)}
    stop = asyncio.Event()
    flood = [asyncio.create_task(trickle(service, i, stop)) for i in range(FLOODERS)]
    await asyncio.sleep(1.0)
    answers = await asyncio.gather(*(pings(service, t, d) for d, t in tokens.items()))
    stop.set()
    await asyncio.gather(*flood)
    for writer in service.writers:
        writer.close()
    statuses = [s for device in answers for s in device]
    assert sum(200 <= s < 300 for s in statuses) >= 0.99 * len(statuses), statuses

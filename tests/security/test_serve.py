"""The slow-body flood against a real ``geofence serve`` (issue 23's black-box probe):
60 connections trickling bodies with made-up tokens, a small in-flight cap, and genuine
pings that must still be answered; then a clean stop on SIGTERM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REDIS_URL, drop_prefix, redis_client_or_skip
from tests.security.conftest import Served, flood_and_ping
from tools.processes import SERVE, Process, free_port, service_env, wait_http

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
            # no app in this process: only what is sent and answered
            yield Served(None, port, session, sdk_key=env["GEOFENCE_SDK_KEYS"])  # type: ignore[arg-type]
        process.proc.terminate()
        assert process.proc.wait(timeout=30) == 0, process.log()[-4000:]
        assert "Traceback" not in process.log()
        assert "ERROR" not in process.log()
    finally:
        process.stop()
        if request.param == "redis":
            await drop_prefix(client, prefix)
            await client.aclose()


async def test_a_slow_body_flood_leaves_genuine_pings_served(service: Served) -> None:
    tokens = {f"d{i}": await service.register(f"d{i}") for i in range(DEVICES)}
    statuses = await flood_and_ping(service, tokens, FLOODERS, PINGS_EACH)
    for writer in service.writers:
        writer.close()
    assert sum(200 <= s < 300 for s in statuses) >= 0.99 * len(statuses), statuses

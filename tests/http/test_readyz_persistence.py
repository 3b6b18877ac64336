"""``/readyz`` and the start-up log say whether Redis keeps the state across its restarts
(issue 24 item 1): each test runs a redis-server of its own, configured as the case needs
(the shared test server's configuration is never changed)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.http.app import create_app
from geofence.persistence import PERSISTENCE_OFF
from tools.processes import Process, free_port

pytestmark = pytest.mark.redis
Serve = Callable[..., Awaitable[tuple[Any, RedisStore]]]


@pytest.fixture
async def served(
    tmp_path: Path, aiohttp_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Serve]:
    """Starts a redis-server with the given flags and the app on it, its log captured:
    answers the test client and the store. Both are stopped afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server to start")
    caplog.set_level(logging.INFO, logger="geofence")
    started: list[tuple[Process, RedisStore]] = []

    async def serve(*flags: str) -> tuple[Any, RedisStore]:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        process = Process(f"redis-{port}", [*argv, "--dir", str(tmp_path), *flags], {}, tmp_path)
        process.start()
        url = f"redis://127.0.0.1:{port}/0"
        await answering(url)
        store = RedisStore.from_url(url, prefix="readyz-test")
        started.append((process, store))
        return await aiohttp_client(create_app(settings, store=store)), store

    yield serve
    for process, store in started:
        await store.close()
        process.stop()


async def answering(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with redis.Redis.from_url(url, socket_timeout=1) as client:
        while True:
            try:
                await client.ping()
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                await asyncio.sleep(0.05)
            else:
                return


async def readyz(client: Any) -> dict[str, Any]:
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_persistence_off_is_a_warning_on_readyz_and_at_start(
    served: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = await served("--appendonly", "no", "--save", "")
    body = await readyz(client)
    assert body["persistence"] == "off"
    assert body["warnings"] == [PERSISTENCE_OFF]
    started = [r for r in caplog.records if r.getMessage() == PERSISTENCE_OFF]
    assert [r.levelname for r in started] == ["WARNING"]
    # what the running server does now, not what it started with
    await store.client.config_set("appendonly", "yes")
    body = await readyz(client)
    assert body["persistence"] == "aof"
    assert body["warnings"] == []
    await store.client.config_set("appendonly", "no")
    await store.client.config_set("save", "900 1")
    body = await readyz(client)
    assert body["persistence"] == "rdb"
    assert body["warnings"] == []


async def test_aof_as_documented_gives_no_warning(
    served: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await served("--appendonly", "yes", "--appendfsync", "everysec")
    body = await readyz(client)
    assert body["persistence"] == "aof"
    assert body["warnings"] == []
    assert not [r for r in caplog.records if "persistence" in r.getMessage()]


async def test_config_refused_is_unknown_and_still_ready(
    served: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Managed Redis often forbids CONFIG: readyz stays 200, the start says so once."""
    client, _ = await served("--appendonly", "no", "--save", "", "--rename-command", "CONFIG", "")
    for _ in range(2):
        body = await readyz(client)
        assert body["persistence"] == "unknown"
        assert body["warnings"] == []
    said = [r for r in caplog.records if "persistence unknown" in r.getMessage()]
    assert [r.levelname for r in said] == ["INFO"]


async def test_the_memory_store_says_so(aiohttp_client: Any, settings: Settings) -> None:
    body = await readyz(await aiohttp_client(create_app(settings)))
    assert body["persistence"] == "memory"
    assert body["warnings"] == []

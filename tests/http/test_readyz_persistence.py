"""``/readyz`` and the start-up log say whether Redis keeps the state across its restarts
(issue 24 item 1): each test runs a redis-server of its own, configured as the case needs
(the shared test server's configuration is never changed)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.http.app import create_app
from geofence.persistence import PERSISTENCE_OFF
from tests.system.processes import Process, free_port

pytestmark = pytest.mark.redis
Started = Callable[..., Any]


@pytest.fixture
async def redis_with(tmp_path: Path) -> AsyncIterator[Started]:
    """Starts a redis-server with the given flags; answers its URL. Stopped afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server to start")
    started: list[Process] = []

    def start(*flags: str) -> str:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(tmp_path), *flags]
        started.append(Process(f"redis-{port}", argv, {}, tmp_path))
        started[-1].start()
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as client:
                    client.ping()
                return url
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    yield start
    for process in started:
        process.stop()


async def ready(aiohttp_client: Any, settings: Settings, url: str) -> tuple[Any, RedisStore]:
    store = RedisStore.from_url(url, prefix="readyz-test")
    client = await aiohttp_client(create_app(settings, store=store))
    return client, store


async def readyz(client: Any) -> dict[str, Any]:
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_persistence_off_is_a_warning_on_readyz_and_at_start(
    aiohttp_client: Any, settings: Settings, redis_with: Started, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="geofence")
    url = redis_with("--appendonly", "no", "--save", "")
    client, store = await ready(aiohttp_client, settings, url)
    try:
        body = await readyz(client)
        assert body["persistence"] == "off" and body["warnings"] == [PERSISTENCE_OFF]
        started = [r for r in caplog.records if r.getMessage() == PERSISTENCE_OFF]
        assert [r.levelname for r in started] == ["WARNING"]
        # what the running server does now, not what it started with
        await store.client.config_set("appendonly", "yes")
        body = await readyz(client)
        assert body["persistence"] == "aof" and body["warnings"] == []
        await store.client.config_set("appendonly", "no")
        await store.client.config_set("save", "900 1")
        body = await readyz(client)
        assert body["persistence"] == "rdb" and body["warnings"] == []
    finally:
        await store.close()


async def test_aof_as_documented_gives_no_warning(
    aiohttp_client: Any, settings: Settings, redis_with: Started, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="geofence")
    url = redis_with("--appendonly", "yes", "--appendfsync", "everysec")
    client, store = await ready(aiohttp_client, settings, url)
    try:
        body = await readyz(client)
        assert body["persistence"] == "aof" and body["warnings"] == []
        assert not [r for r in caplog.records if "persistence" in r.getMessage()]
    finally:
        await store.close()


async def test_config_refused_is_unknown_and_still_ready(
    aiohttp_client: Any, settings: Settings, redis_with: Started, caplog: pytest.LogCaptureFixture
) -> None:
    """Managed Redis often forbids CONFIG: readyz stays 200, the start says so once."""
    caplog.set_level(logging.INFO, logger="geofence")
    url = redis_with("--appendonly", "no", "--save", "", "--rename-command", "CONFIG", "")
    client, store = await ready(aiohttp_client, settings, url)
    try:
        for _ in range(2):
            body = await readyz(client)
            assert body["persistence"] == "unknown" and body["warnings"] == []
        said = [r for r in caplog.records if "persistence unknown" in r.getMessage()]
        assert [r.levelname for r in said] == ["INFO"]
    finally:
        await store.close()


async def test_the_memory_store_says_so(aiohttp_client: Any, settings: Settings) -> None:
    body = await readyz(await aiohttp_client(create_app(settings)))
    assert body["persistence"] == "memory" and body["warnings"] == []

"""Shared fixtures: the state stores (memory and a real Redis) and app settings.

Redis tests use GEOFENCE_TEST_REDIS_URL (default redis://127.0.0.1:6379/15) with a key
prefix of their own, removed afterwards. Without a Redis server they are skipped, unless
GEOFENCE_REQUIRE_REDIS=1 (as in CI), where a missing server fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.ports import StateStore
from tests.json_logs import JsonLog, json_logs

REDIS_URL = os.environ.get("GEOFENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

ADMIN_KEY = "test-admin-key"
SDK_KEY = "test-sdk-key"
INGEST_KEY = "test-ingest-key"


async def redis_client_or_skip() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as e:  # noqa: BLE001 - whatever the failure, there is no Redis to test with
        await client.aclose()
        message = f"no Redis at {REDIS_URL}: {e}"
        if os.environ.get("GEOFENCE_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return client


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long soaks (tests marked slow) and the long versions of the system tests",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --soak, tests marked slow are deselected (not skipped: CI fails on skips)."""
    if config.getoption("--soak"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture
async def redis_store_factory() -> AsyncIterator[Callable[..., Any]]:
    """Makes Redis stores on prefixes of their own; every key is removed afterwards."""
    made: list[RedisStore] = []

    async def make(*, prefix: str | None = None, **kwargs: Any) -> RedisStore:
        """A store on a new prefix, or a second client on the ``prefix`` of another."""
        client = await redis_client_or_skip()
        prefix = prefix or f"gftest-{uuid.uuid4().hex[:12]}"
        made.append(RedisStore(client, prefix=prefix, **kwargs))
        return made[-1]

    yield make
    for store in made:
        await drop_prefix(store.client, store.keys.prefix)
        await store.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, redis_store_factory: Any) -> StateStore:
    """The same tests run against both stores."""
    if request.param == "memory":
        return MemoryStore()
    store: StateStore = await redis_store_factory()
    return store


@pytest.fixture
def settings() -> Settings:
    return Settings(
        admin_keys=(ADMIN_KEY,),
        sdk_keys=(SDK_KEY,),
        ingest_keys=(INGEST_KEY,),
        id_secret="test-id-secret",
        stores="",
        catalogue_poll_s=0.05,
        # tests send a device's pings as fast as the machine goes; tests/http/test_limits.py
        # turns the rates on where they are the subject
        device_rate_per_s=0,
        ingest_rate_per_s=0,
    )


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    """What the service's own logging writes during the test, at DEBUG, as JSON lines."""
    with json_logs("DEBUG") as log:
        yield log

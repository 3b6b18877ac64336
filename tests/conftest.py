"""Shared fixtures: the state stores (memory, a real Redis, a Redis Cluster) and app settings.

Redis tests use GEOFENCE_TEST_REDIS_URL (default redis://127.0.0.1:6379/15), cluster tests
GEOFENCE_TEST_CLUSTER_URL (default the one scripts/ensure-cluster.sh starts), each store
with a key prefix of its own, removed afterwards (on a cluster, from every primary).
Without a server they are skipped, unless GEOFENCE_REQUIRE_REDIS=1 (as in CI), where a
missing server or cluster fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import RedisStore, cluster_client
from geofence.config import Settings
from geofence.ports import StateStore
from tests.json_logs import JsonLog, json_logs

REDIS_URL = os.environ.get("GEOFENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CLUSTER_URL = os.environ.get(
    "GEOFENCE_TEST_CLUSTER_URL", "redis+cluster://127.0.0.1:30001,127.0.0.1:30002"
)
CLUSTER_TIMEOUT_S = 5.0

C = TypeVar("C", aioredis.Redis, RedisCluster)

ADMIN_KEY = "test-admin-key"
SDK_KEY = "test-sdk-key"
INGEST_KEY = "test-ingest-key"


async def redis_client_or_skip() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return await answering(client, f"no Redis at {REDIS_URL}")


async def cluster_client_or_skip() -> RedisCluster:
    client = cluster_client(CLUSTER_URL, timeout_s=CLUSTER_TIMEOUT_S, max_connections=64)
    return await answering(
        client, f"no Redis Cluster at {CLUSTER_URL} (scripts/ensure-cluster.sh starts one)"
    )


async def answering(client: C, missing_message: str) -> C:
    """``client`` once it answers a PING; else closed, and the test ``missing`` its server."""
    try:
        await client.ping()
    except Exception as e:  # noqa: BLE001 - whatever the failure, there is no server to test with
        await client.aclose()
        missing(f"{missing_message}: {e}")
    return client


def missing(message: str) -> None:
    """A server to test with is missing: skip, or fail under GEOFENCE_REQUIRE_REDIS=1."""
    if os.environ.get("GEOFENCE_REQUIRE_REDIS") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def drop_prefix(client: aioredis.Redis | RedisCluster, prefix: str) -> None:
    """Every key under ``prefix`` removed (a cluster's scan asks every primary)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if isinstance(client, RedisCluster):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
    elif keys:
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


@asynccontextmanager
async def _store_factory(
    connect: Callable[[], Awaitable[Any]], **defaults: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Makes stores, each on a client of its own from ``connect`` and a prefix of its own
    (or the ``prefix`` of another); every key is removed afterwards (from every primary of
    a cluster)."""
    made: list[RedisStore] = []

    async def make(*, prefix: str | None = None, **kwargs: Any) -> RedisStore:
        client = await connect()
        prefix = prefix or f"gftest-{uuid.uuid4().hex[:12]}"
        made.append(RedisStore(client, prefix=prefix, **{**defaults, **kwargs}))
        return made[-1]

    try:
        yield make
    finally:
        for store in made:
            await drop_prefix(store.client, store.keys.prefix)
            await store.close()


@pytest.fixture
async def redis_store_factory() -> AsyncIterator[Callable[..., Any]]:
    """Makes Redis stores on prefixes of their own; every key is removed afterwards."""
    async with _store_factory(redis_client_or_skip) as make:
        yield make


@pytest.fixture
async def cluster_store_factory() -> AsyncIterator[Callable[..., Any]]:
    """Makes stores on the Redis Cluster, each its own client, on prefixes of their own."""
    async with _store_factory(cluster_client_or_skip, timeout_s=CLUSTER_TIMEOUT_S) as make:
        yield make


@pytest.fixture
def aiohttp_client(
    redis_store_factory: Any,  # noqa: ARG001 - asked for to be set up first
    cluster_store_factory: Any,  # noqa: ARG001 - likewise
    aiohttp_client: Any,
) -> Any:
    """pytest-aiohttp's, set up after the store factories whatever order a test names
    them in, so torn down before them: every app (its catalogue watch, its dispatcher) is
    stopped before its stores are closed. (Fixtures are torn down in the reverse order
    of their set-up: a test that named ``aiohttp_client`` first had its stores closed
    under its running app, whose catalogue watch then reopened connections.)"""
    return aiohttp_client


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def store(
    request: pytest.FixtureRequest, redis_store_factory: Any, cluster_store_factory: Any
) -> StateStore:
    """The same tests run against every store: in memory, on Redis, on a Redis Cluster."""
    if request.param == "memory":
        return MemoryStore()
    factory = redis_store_factory if request.param == "redis" else cluster_store_factory
    store: StateStore = await factory()
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


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def any_redis_factory(
    request: pytest.FixtureRequest, redis_store_factory: Any, cluster_store_factory: Any
) -> Callable[..., Any]:
    """The store factory of a single Redis, then of a Redis Cluster: a Redis-only test
    written once runs on both."""
    factory: Callable[..., Any] = (
        redis_store_factory if request.param == "redis" else cluster_store_factory
    )
    return factory

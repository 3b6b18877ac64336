"""An offer's budget across processes on a Redis Cluster: two ``geofence serve
--workers 2`` (four workers, two hosts' worth), one offer with a budget of 100 on one
store, 400 devices entering that store at the same moment, their pings spread over both
services. The budget is a counter reserved with a check-and-increment on its own slot
before each state write (given back if the write loses): never more than 100
notifications, counted in the answers, at the gateway and in the store, and, with
nothing crashing, close to 100 of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from geofence.adapters.redis import RedisStore
from tests.system.cluster import (
    Cluster,
    gateway_control,
    generous_offer,
    put_offer,
    register,
    wait_delivered,
)
from tests.system.walkers import Town
from tools.redis_cluster import RedisCluster, free_base

BUDGET = 100
DEVICES = 400
DWELL_S = 10
CLOSE_TO = 90  # with nothing crashing, at least as many of the budget are spent
OFFER = "budgeted"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("cluster_budget")
    redis_cluster = RedisCluster(logs, base_port=free_base(3), primaries=3, replicas=0)
    deployment = Cluster(logs, services=2, redis_cluster=redis_cluster, workers=2, dwell_s=DWELL_S)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


async def test_a_budget_is_never_overspent_by_four_workers(deployment: Cluster) -> None:
    town = Town(deployment.settings)
    store_id = town.ids[0]
    lat, lng = town.inside[store_id]
    url = deployment.urls[0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await put_offer(session, url, OFFER, generous_offer([store_id], budget=BUDGET))
        await gateway_control(session, deployment.gateway_url, "reset")
        ids = [f"budget-{i:04d}" for i in range(DEVICES)]
        tokens = await register(session, url, ids)
        now = time.time()
        arrived = await everyone(session, deployment.urls, tokens, lat, lng, now - 3 * DWELL_S)
        assert all(a["events"] == [] for a in arrived), arrived[:3]
        entered = await everyone(session, deployment.urls, tokens, lat, lng, now)
        notified = {n["notification_id"] for a in entered for n in a["notifications"]}
        calls = await wait_delivered(session, deployment.gateway_url, notified, 30)
    delivered = {c["json"]["notification_id"] for c in calls if c["status"] == 200}
    spent = await spent_in_store(deployment)
    entries = sum(1 for a in entered for e in a["events"] if e["type"] == "entry")
    print(
        f"entries={entries} notified={len(notified)} delivered={len(delivered)}"
        f" spent={spent} budget={BUDGET}"
    )

    assert entries == DEVICES
    assert len(notified) <= BUDGET
    assert len(delivered) <= BUDGET
    assert delivered == notified
    assert len(notified) <= spent <= BUDGET
    assert len(notified) >= CLOSE_TO


async def everyone(
    session: aiohttp.ClientSession,
    urls: list[str],
    tokens: dict[str, str],
    lat: float,
    lng: float,
    ts: float,
) -> list[dict[str, Any]]:
    """Every device pings at ``ts`` from inside the store, all at once, each to the
    services in turn; a 503 is resent with the same ping after its Retry-After."""

    async def one(i: int, device_id: str) -> dict[str, Any]:
        body = {"device_id": device_id, "lat": lat, "lon": lng, "accuracy_m": 5, "ts": ts}
        headers = {"Authorization": f"Bearer {tokens[device_id]}"}
        for _ in range(10):
            async with session.post(
                f"{urls[i % len(urls)]}/v1/pings", json=body, headers=headers
            ) as resp:
                if resp.status != 503:
                    assert resp.status == 200, await resp.text()
                    answer: dict[str, Any] = await resp.json()
                    return answer
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
        raise AssertionError(f"{device_id}: 503 after 503")

    return list(await asyncio.gather(*(one(i, d) for i, d in enumerate(tokens))))


async def spent_in_store(deployment: Cluster) -> int:
    store = RedisStore.on_cluster(deployment.redis_url, prefix=deployment.prefix)
    try:
        return (await store.budget_spent([OFFER]))[OFFER]
    finally:
        await store.close()

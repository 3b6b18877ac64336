"""Two app instances on one Redis never overspend a budget or a device cap (contract §6)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.config import Settings
from geofence.http.app import create_app
from tests.conftest import admin
from tests.http.test_offers_api import put_offer
from tests.http.test_pings_api import ping_body, register, send

pytestmark = pytest.mark.redis
Client = TestClient[Any, Any]

CENTRE = (60.17050, 24.94050)
SQUARE = [[24.9400, 60.1700], [24.9410, 60.1700], [24.9410, 60.1710], [24.9400, 60.1710]]


def twin_fences() -> dict[str, Any]:
    """Two stores on the same square, one confirming after 60 s and one after 120 s."""

    def feature(store_id: str, dwell_s: int) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": store_id,
            "geometry": {"type": "Polygon", "coordinates": [[*SQUARE, SQUARE[0]]]},
            "properties": {"name": store_id, "dwell_s": dwell_s},
        }

    return {"type": "FeatureCollection", "features": [feature("quick", 60), feature("slow", 120)]}


async def two_apps(aiohttp_client: Any, factory: Any, settings: Settings) -> list[Client]:
    first = await factory()
    second = await factory(prefix=first.keys.prefix)
    clients = [await aiohttp_client(create_app(settings, store=s)) for s in (first, second)]
    resp = await clients[0].put("/v1/stores", json=twin_fences(), headers=admin())
    assert resp.status == 200, await resp.text()
    for _ in range(200):  # the second app polls the catalogue version
        ready = await (await clients[1].get("/readyz")).json()
        if ready.get("stores") == 2:
            return clients
        await asyncio.sleep(0.02)
    raise AssertionError("the second app never saw the catalogue")


async def test_a_budget_of_one_is_spent_once(
    aiohttp_client: Any, redis_store_factory: Any, settings: Settings
) -> None:
    apps = await two_apps(aiohttp_client, redis_store_factory, settings.replace(quiet_hours="off"))
    await put_offer(apps[0], "scarce", store_ids=["quick"], budget=1)
    now = time.time()
    devices = [f"d{i}" for i in range(6)]
    tokens = {d: await register(apps[0], d) for d in devices}
    for d in devices:
        await send(apps[0], tokens[d], ping_body(d, CENTRE, now - 100))
    # every device confirms its entry at the same moment, half on each app
    answers = await asyncio.gather(
        *(
            send(apps[i % 2], tokens[d], ping_body(d, CENTRE, now - 30))
            for i, d in enumerate(devices)
        )
    )
    bodies = [await a.json() for a in answers]
    assert all(len(b["events"]) == 1 for b in bodies), bodies
    notes = [n for b in bodies for n in b["notifications"]]
    assert len(notes) == 1
    offer = await (await apps[1].get("/v1/offers/scarce", headers=admin())).json()
    assert offer["budget_spent"] == 1


async def test_a_device_cap_of_one_is_spent_once(
    aiohttp_client: Any, redis_store_factory: Any, settings: Settings
) -> None:
    changed = settings.replace(quiet_hours="off", device_cap=1)
    apps = await two_apps(aiohttp_client, redis_store_factory, changed)
    await put_offer(apps[0], "for-quick", store_ids=["quick"])
    await put_offer(apps[0], "for-slow", store_ids=["slow"])
    now = time.time()
    for round_no in range(8):
        device = f"r{round_no}"
        token = await register(apps[0], device)
        await send(apps[0], token, ping_body(device, CENTRE, now - 200))
        # one ping confirms "quick", the other "quick" and "slow": sent at once, one per app
        pair = await asyncio.gather(
            send(apps[0], token, ping_body(device, CENTRE, now - 140)),
            send(apps[1], token, ping_body(device, CENTRE, now - 80)),
        )
        bodies = [await resp.json() for resp in pair]
        entries = sorted(e["store_id"] for b in bodies for e in b["events"])
        assert entries == ["quick", "slow"], bodies
        assert len([n for b in bodies for n in b["notifications"]]) == 1, bodies

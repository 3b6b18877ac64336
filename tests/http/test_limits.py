"""Admission on the ping routes over HTTP: 429 per caller over its rate, 503 past the cap
on pings in flight, both with Retry-After, problem+json and documented; never a 500."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings, SettingsError
from geofence.domain.devices import DeviceProfile
from geofence.http.app import create_app
from geofence.http.keys import PING_GATE
from geofence.http.openapi import openapi_document
from geofence.ports import StoredState
from tests.conftest import INGEST_KEY, admin
from tests.http.test_openapi import OpenAPI
from tests.http.test_ops import assert_problem
from tests.http.test_pings_api import INSIDE, ping_body, register

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
LIMITED = {"device_rate_per_s": 2.0, "device_burst": 5, "ingest_rate_per_s": 1.0}


class Clock:
    """The gate's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class StallingStore(MemoryStore):
    """Holds every device lookup while ``stall`` is set, so pings stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = False
        self.release = asyncio.Event()

    async def get_devices(self, refs: Sequence[str]) -> list[DeviceProfile | None]:
        await self._held()
        return await super().get_devices(refs)

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        await self._held()
        return await super().load_devices(refs)

    async def _held(self) -> None:
        if self.stall:
            await self.release.wait()


@pytest.fixture
def make(aiohttp_client: Any, settings: Settings) -> Callable[..., Awaitable[Client]]:
    """A client of an app on a memory store (admission does not touch the store), whose
    gate runs on a hand-moved clock: ``client.app[PING_GATE].clock.now += ...``."""

    async def make(store: MemoryStore | None = None, **changes: Any) -> Client:
        app = create_app(settings.replace(**changes), store=store or MemoryStore())
        app[PING_GATE].clock = Clock()
        client: Client = await aiohttp_client(app)
        return client

    return make


def clock_of(client: Client) -> Clock:
    clock = client.app[PING_GATE].clock
    assert isinstance(clock, Clock)
    return clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ping(client: Client, token: str, device_id: str, ts: float) -> Any:
    return await client.post(
        "/v1/pings", json=ping_body(device_id, INSIDE, ts), headers=bearer(token)
    )


async def statuses(client: Client, token: str, device_id: str, n: int, ts: float) -> list[int]:
    return [(await ping(client, token, device_id, ts + i)).status for i in range(n)]


async def assert_limited(resp: Any) -> int:
    """A 429 rate-limited problem, documented; its Retry-After in whole seconds."""
    body = await assert_problem(resp, 429)
    assert body["type"] == "/problems/rate-limited"
    retry_after = resp.headers["Retry-After"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    path = "/v1/pings/batch" if resp.url.path.endswith("batch") else "/v1/pings"
    OpenAPI(openapi_document()).check(
        "POST", path, 429, resp.content_type, json.loads(json.dumps(body)), resp.headers
    )
    return int(retry_after)


# rates


async def test_a_device_over_its_burst_is_told_when_to_come_back(make: MakeClient) -> None:
    client = await make(**LIMITED)
    token = await register(client, "flood")
    now = time.time() - 60
    assert await statuses(client, token, "flood", 5, now) == [200] * 5
    retry_after = await assert_limited(await ping(client, token, "flood", now + 5))
    assert retry_after == 1  # one request every 0.5 s
    clock_of(client).now += 0.4
    await assert_limited(await ping(client, token, "flood", now + 5))
    clock_of(client).now += retry_after
    assert (await ping(client, token, "flood", now + 5)).status == 200


async def test_a_refused_ping_is_not_stored(make: MakeClient) -> None:
    client = await make(**LIMITED)
    token = await register(client, "flood")
    now = time.time() - 60
    await statuses(client, token, "flood", 5, now)
    await assert_limited(await ping(client, token, "flood", now + 30))
    clock_of(client).now += 10
    answer = await (await ping(client, token, "flood", now + 10)).json()
    assert answer["status"] == "accepted"  # ts + 30 was never taken as the last ping


async def test_other_devices_are_not_affected(make: MakeClient) -> None:
    client = await make(**LIMITED)
    flood, quiet = await register(client, "flood"), await register(client, "quiet")
    now = time.time() - 60
    assert (await statuses(client, flood, "flood", 8, now)).count(429) == 3
    assert await statuses(client, quiet, "quiet", 5, now) == [200] * 5


async def test_a_device_batch_spends_the_same_requests_as_its_pings(make: MakeClient) -> None:
    client = await make(**LIMITED)
    token = await register(client, "flood")
    now = time.time() - 60
    await statuses(client, token, "flood", 4, now)
    batch = {"pings": [ping_body("flood", INSIDE, now + 10 + i) for i in range(50)]}
    resp = await client.post("/v1/pings/batch", json=batch, headers=bearer(token))
    assert resp.status == 200  # one request, however many pings
    await assert_limited(await client.post("/v1/pings/batch", json=batch, headers=bearer(token)))
    await assert_limited(await ping(client, token, "flood", now + 100))


async def test_an_ingest_key_has_a_rate_of_its_own(make: MakeClient) -> None:
    client = await make(**LIMITED, ingest_burst=2)
    token = await register(client, "member")
    now = time.time() - 60
    batch = {"pings": [ping_body("member", INSIDE, now)]}
    answers = [
        (await client.post("/v1/pings/batch", json=batch, headers=bearer(INGEST_KEY))).status
        for _ in range(2)
    ]
    assert answers == [200, 200]
    resp = await client.post("/v1/pings/batch", json=batch, headers=bearer(INGEST_KEY))
    assert await assert_limited(resp) == 1
    assert await statuses(client, token, "member", 5, now + 1) == [200] * 5


async def test_a_forged_token_cannot_spend_another_devices_requests(make: MakeClient) -> None:
    client = await make(**LIMITED)
    token = await register(client, "victim")
    ref, nonce, tag = token.split(".")
    forged = f"{ref}.{nonce}.{'A' * len(tag)}"
    now = time.time() - 60
    answers = await statuses(client, forged, "victim", 10, now)
    assert answers == [401] * 10  # refused at the edge: no device bucket is touched
    assert client.app[PING_GATE].device is not None
    assert len(client.app[PING_GATE].device) == 0
    assert await statuses(client, token, "victim", 5, now) == [200] * 5


async def test_keys_that_may_not_ping_are_refused_not_limited(make: MakeClient) -> None:
    client = await make(**{**LIMITED, "device_burst": 1})
    body = ping_body("anyone", INSIDE, time.time())
    for _ in range(5):
        await assert_problem(await client.post("/v1/pings", json=body, headers=admin()), 403)
        await assert_problem(await client.post("/v1/pings", json=body), 401)


async def test_other_routes_are_not_limited(make: MakeClient) -> None:
    client = await make(**{**LIMITED, "device_burst": 1})
    token = await register(client, "member")
    for _ in range(5):
        resp = await client.get("/v1/devices/member/export", headers=bearer(token))
        assert resp.status == 200


async def test_rate_zero_turns_the_limit_off(make: MakeClient) -> None:
    client = await make(device_rate_per_s=0, device_burst=1)
    token = await register(client, "member")
    now = time.time() - 60
    assert await statuses(client, token, "member", 40, now) == [200] * 40


async def test_refusals_are_counted(make: MakeClient) -> None:
    client = await make(**LIMITED)
    token = await register(client, "flood")
    await statuses(client, token, "flood", 7, time.time() - 60)
    text = await (await client.get("/metrics")).text()
    assert 'geofence_requests_refused_total{reason="rate-limited"} 2.0' in text
    assert 'geofence_http_requests_total{route="/v1/pings",status="429"} 2.0' in text


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"device_rate_per_s": -1.0}, "GEOFENCE_DEVICE_RATE_PER_S"),
        ({"device_burst": 0}, "GEOFENCE_DEVICE_BURST"),
        ({"ingest_rate_per_s": 5.0, "ingest_burst": 0}, "GEOFENCE_INGEST_BURST"),
        ({"max_inflight": -1}, "GEOFENCE_MAX_INFLIGHT"),
    ],
)
def test_unusable_settings_name_their_variable(
    settings: Settings, changes: dict[str, Any], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        create_app(settings.replace(**{**LIMITED, **changes}), store=MemoryStore())


# load shedding


async def in_flight(client: Client, n: int) -> None:
    for _ in range(200):
        if client.app[PING_GATE].inflight == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{client.app[PING_GATE].inflight} pings in flight, not {n}")


async def test_past_the_cap_in_flight_a_ping_is_shed_at_once(make: MakeClient) -> None:
    store = StallingStore()
    client = await make(store, max_inflight=3)
    tokens = [await register(client, f"d{i}") for i in range(4)]
    now = time.time() - 60
    store.stall = True
    held = [asyncio.create_task(ping(client, tokens[i], f"d{i}", now)) for i in range(3)]
    await in_flight(client, 3)
    resp = await asyncio.wait_for(ping(client, tokens[3], "d3", now), timeout=2)
    body = await assert_problem(resp, 503)
    assert body["type"] == "/problems/overloaded"
    assert resp.headers["Retry-After"] == "1"
    OpenAPI(openapi_document()).check(
        "POST", "/v1/pings", 503, resp.content_type, body, resp.headers
    )
    store.release.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200] * 3
    assert client.app[PING_GATE].inflight == 0
    assert (await ping(client, tokens[3], "d3", now)).status == 200


async def test_a_crowd_gets_answers_or_503s_never_a_500(make: MakeClient) -> None:
    store = StallingStore()
    client = await make(store, max_inflight=5, **LIMITED)
    tokens = [await register(client, f"d{i}") for i in range(10)]
    now = time.time() - 60
    store.stall = True
    crowd = [
        asyncio.create_task(ping(client, tokens[i % 10], f"d{i % 10}", now + i)) for i in range(60)
    ]
    await in_flight(client, 5)
    await asyncio.sleep(0.05)
    store.release.set()
    answers = await asyncio.gather(*crowd)
    counts = {s: [r.status for r in answers].count(s) for s in (200, 429, 503)}
    assert sum(counts.values()) == 60
    assert counts[200] >= 5
    assert counts[503] > 0
    for resp in answers:
        if resp.status != 200:
            assert resp.headers["Retry-After"].isdigit()
    assert client.app[PING_GATE].inflight == 0

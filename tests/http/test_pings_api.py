"""Pings over HTTP (contract §5), on both stores."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from geofence.adapters.traces import read_trace
from geofence.config import Settings
from geofence.domain.times import format_time
from geofence.http.app import create_app
from geofence.http.keys import DEVICES, PINGS
from tests.conftest import INGEST_KEY, SDK_KEY, admin
from tests.contract.test_coalescer import CountingStore
from tests.contract.test_replay import FENCES, TRACK, replay_events
from tests.http.test_ops import assert_problem

INSIDE = (60.1774, 24.9495)  # Rautamies, osm-way-88777732 in stores.geojson
INSIDE_2 = (60.1774, 24.9496)
OUTSIDE = (60.1790, 24.9480)
FAR_OUTSIDE = (60.1795, 24.9475)


async def register(client: TestClient[Any, Any], device_id: str, **consent: bool) -> str:
    body = {"device_id": device_id, "consent": {"location": True, "offers": True, **consent}}
    resp = await client.post(
        "/v1/devices", json=body, headers={"Authorization": f"Bearer {SDK_KEY}"}
    )
    assert resp.status == 201, await resp.text()
    token: str = (await resp.json())["device_token"]
    return token


def ping_body(
    device_id: str, where: tuple[float, float], ts: float | str, **extra: Any
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "lat": where[0],
        "lon": where[1],
        "accuracy_m": 8,
        "ts": ts,
        **extra,
    }


async def send(client: TestClient[Any, Any], token: str, body: Any, query: str = "") -> Any:
    return await client.post(
        f"/v1/pings{query}", json=body, headers={"Authorization": f"Bearer {token}"}
    )


async def test_the_quick_start_walk(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson")
    token = await register(client, "member-42")
    now = time.time()
    walk = [
        (OUTSIDE, 400),
        (INSIDE, 300),
        (INSIDE_2, 240),
        (INSIDE, 170),
        (OUTSIDE, 100),
        (FAR_OUTSIDE, 30),
    ]
    answers = []
    for where, ago in walk:
        resp = await send(client, token, ping_body("member-42", where, now - ago))
        assert resp.status == 200, await resp.text()
        answers.append(await resp.json())
    assert [a["status"] for a in answers] == ["accepted"] * 6
    events = [e for a in answers for e in a["events"]]
    assert [(e["type"], e["store_id"]) for e in events] == [
        ("entry", "osm-way-88777732"),
        ("exit", "osm-way-88777732"),
    ]
    # times go out as RFC 3339 UTC, to the microsecond
    assert events[0]["at"] == format_time(now - 170)
    assert events[0]["at"].endswith("Z")
    assert events[0]["arrived_at"] == format_time(now - 300)
    assert events[1]["left_at"] == format_time(now - 100)
    assert events[1]["reason"] == "left"
    assert events[1]["dwell_s"] == 200
    assert all(a["notifications"] == [] for a in answers)


async def test_rfc3339_ts_and_stale_duplicate(client: TestClient[Any, Any]) -> None:
    token = await register(client, "d1")
    body = ping_body("d1", INSIDE, 0) | {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    first = await (await send(client, token, body)).json()
    again = await (await send(client, token, body)).json()
    assert first["status"] == "accepted"
    assert (again["status"], again["reason"]) == ("ignored", "stale")


async def test_screening_reasons_over_http(client: TestClient[Any, Any]) -> None:
    token = await register(client, "d1")
    now = time.time()
    cases = [
        (ping_body("d1", INSIDE, now + 3600), ("ignored", "future")),
        (ping_body("d1", INSIDE, now - 2 * 86_400), ("ignored", "too_old")),
        (ping_body("d1", INSIDE, now - 50) | {"accuracy_m": 500}, ("flagged", "inaccurate")),
        (ping_body("d1", INSIDE, now - 40) | {"mocked": True}, ("flagged", "mocked")),
        (ping_body("d1", INSIDE, now - 30), ("accepted", None)),
        (ping_body("d1", (61.0, 25.0), now - 20), ("flagged", "jump")),
    ]
    for body, expected in cases:
        answer = await (await send(client, token, body)).json()
        assert (answer["status"], answer["reason"]) == expected, body


async def test_bad_pings_are_4xx_and_change_nothing(
    client: TestClient[Any, Any], store: Any
) -> None:
    token = await register(client, "d1")
    now = time.time()
    bad = [
        (ping_body("d1", (91.0, 24.9), now), 422),
        (ping_body("d1", (60.0, 181.0), now), 422),
        (ping_body("d1", INSIDE, now) | {"device_ref": "x"}, 422),
        (ping_body("d1", INSIDE, now) | {"ts": "yesterday"}, 422),
        (ping_body("d1", INSIDE, now) | {"ts": "2026-11-23T10:00:00"}, 422),
        (ping_body("d1", INSIDE, now) | {"lat": True}, 422),
        ({"device_id": "d1", "lat": 60.1}, 422),
        ([1, 2], 422),
    ]
    for body, status in bad:
        await assert_problem(await send(client, token, body), status)
    raw = b'{"device_id": "d1", "lat": NaN, "lon": 24.9, "accuracy_m": 5, "ts": 1}'
    resp = await client.post(
        "/v1/pings",
        data=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    await assert_problem(resp, 400)
    for empty in (b"", b"   "):  # Content-Length: 0 has a stream of its own in aiohttp
        resp = await client.post(
            "/v1/pings",
            data=empty,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        await assert_problem(resp, 400)
    stored = await store.load_state(client.app[DEVICES].ref_of("d1"))
    assert stored.version == 0
    assert stored.state.last_ts is None


async def test_callers_that_may_not_ping(client: TestClient[Any, Any]) -> None:
    token = await register(client, "d1")
    other = await register(client, "d2")
    body = ping_body("d1", INSIDE, time.time())
    await assert_problem(await send(client, SDK_KEY, body), 403)
    await assert_problem(await client.post("/v1/pings", json=body, headers=admin()), 403)
    await assert_problem(await send(client, other, body), 404)
    await assert_problem(await send(client, token + "x", body), 401)
    await assert_problem(await send(client, token, ping_body("nobody", INSIDE, time.time())), 404)


async def test_without_location_consent_pings_are_refused(client: TestClient[Any, Any]) -> None:
    token = await register(client, "d1", location=False)
    problem = await assert_problem(
        await send(client, token, ping_body("d1", INSIDE, time.time())), 403
    )
    assert problem["type"].endswith("consent-required")


async def test_batch_mixes_devices_and_bad_pings(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson")
    await register(client, "d1")
    await register(client, "d2", location=False)
    now = time.time()
    pings = [
        ping_body("d1", INSIDE, now - 100),
        ping_body("d1", INSIDE, now - 230),  # earlier: taken first
        {"device_id": "d1", "lat": "north"},
        ping_body("d2", INSIDE, now - 100),
        ping_body("ghost", INSIDE, now - 100),
        ping_body("d1", INSIDE, now - 100),  # duplicate of the first
    ]
    resp = await send(client, INGEST_KEY, {"pings": pings}, "/batch")
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("accepted", None),
        ("accepted", None),
        ("invalid", "validation-error"),
        ("invalid", "consent-required"),
        ("invalid", "not-found"),
        ("ignored", "stale"),
    ]
    assert [e["type"] for e in results[0]["events"]] == ["entry"]
    assert results[2]["errors"][0]["path"].startswith("$.pings[2]")


async def test_batch_limits_and_credentials(client: TestClient[Any, Any]) -> None:
    token = await register(client, "d1")
    too_many = {"pings": [ping_body("d1", INSIDE, i) for i in range(1001)]}
    await assert_problem(await send(client, INGEST_KEY, too_many, "/batch"), 422)
    await assert_problem(await send(client, SDK_KEY, {"pings": []}, "/batch"), 403)
    own = await (
        await send(client, token, {"pings": [ping_body("d2", INSIDE, time.time())]}, "/batch")
    ).json()
    assert own["results"][0]["status"] == "invalid"


async def test_service_answers_what_replay_prints(client: TestClient[Any, Any]) -> None:
    """The GPS track sent ping by ping gives exactly the events `geofence replay` gives."""
    await client.put(
        "/v1/stores", json=json.loads(FENCES.read_text(encoding="utf-8")), headers=admin()
    )
    await register(client, "bus-304")
    latest = [0.0]
    client.app[PINGS].clock = lambda: latest[0]  # "now" follows the trace, as in a replay
    events = []
    trace = list(read_trace(TRACK, device_id="bus-304", default_accuracy_m=10.0))
    for i in range(0, len(trace), 500):
        chunk = trace[i : i + 500]
        latest[0] = max(latest[0], *(p.ping.ts for p in chunk))
        body = {
            "pings": [
                {
                    "device_id": "bus-304",
                    "lat": p.ping.lat,
                    "lon": p.ping.lng,
                    "accuracy_m": p.ping.accuracy_m,
                    "ts": p.ping.ts,
                }
                for p in chunk
            ]
        }
        results = (await (await send(client, INGEST_KEY, body, "/batch")).json())["results"]
        events += [{"device_id": "bus-304", **e} for r in results for e in r["events"]]
    assert events == await replay_events()
    assert events, "the fixture has events"


async def test_a_batch_reads_its_devices_profiles_and_states_at_once(
    aiohttp_client: Any, settings: Settings
) -> None:
    store = CountingStore()
    client = await aiohttp_client(create_app(settings, store=store))
    devices = ("d1", "d2", "d3")
    for device_id in devices:
        await register(client, device_id)
    now = time.time()
    pings = [ping_body(d, OUTSIDE, now - 100 + i) for i, d in enumerate(devices * 5)]
    before = store.reads
    resp = await send(client, INGEST_KEY, {"pings": pings}, "/batch")
    assert resp.status == 200, await resp.text()
    assert [r["status"] for r in (await resp.json())["results"]] == ["accepted"] * len(pings)
    assert store.reads - before == 1  # the profiles and the states together

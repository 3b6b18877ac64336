"""Offers over HTTP (contract §6): the catalogue, the decision on entries, explain, stats."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.domain.times import parse_time
from tests.conftest import admin
from tests.http.test_ops import assert_problem
from tests.http.test_pings_api import INSIDE, INSIDE_2, OUTSIDE, ping_body, register, send

STORE_ID = "osm-way-88777732"  # Rautamies in stores.geojson
Client = TestClient[Any, Any]


def offer_doc(**changes: Any) -> dict[str, Any]:
    doc = {
        "title": "Welcome in",
        "body": "10% off today at {store_name}",
        "store_ids": [STORE_ID],
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
    }
    return {**doc, **changes}


async def put_offer(client: Client, offer_id: str, **changes: Any) -> Any:
    return await client.put(f"/v1/offers/{offer_id}", json=offer_doc(**changes), headers=admin())


async def walk_in(client: Client, token: str, device_id: str, query: str = "") -> list[Any]:
    """Four pings that make an entry on the last one (dwell 120 s), 170 s ago."""
    now = time.time()
    walk = [(OUTSIDE, 400), (INSIDE, 300), (INSIDE_2, 240), (INSIDE, 170)]
    answers = []
    for where, ago in walk:
        resp = await send(client, token, ping_body(device_id, where, now - ago), query)
        assert resp.status == 200, await resp.text()
        answers.append(await resp.json())
    assert [e["type"] for e in answers[-1]["events"]] == ["entry"]
    return answers


# the catalogue of offers


async def test_offer_put_get_list_delete(client: Client) -> None:
    created = await put_offer(client, "welcome", priority=2)
    assert created.status == 201, await created.text()
    doc = await created.json()
    assert doc["id"] == "welcome"
    assert doc["priority"] == 2
    assert doc["budget_spent"] == 0
    assert doc["starts_at"] == "2020-01-01T00:00:00Z"
    assert (await put_offer(client, "welcome", priority=3)).status == 200
    got = await (await client.get("/v1/offers/welcome", headers=admin())).json()
    assert got["priority"] == 3
    assert got["per_device_limit"] == 1
    assert got["ttl_s"] == 3600
    await put_offer(client, "another")
    listed = await (await client.get("/v1/offers", headers=admin())).json()
    assert [o["id"] for o in listed["offers"]] == ["another", "welcome"]
    assert (await client.delete("/v1/offers/welcome", headers=admin())).status == 204
    await assert_problem(await client.delete("/v1/offers/welcome", headers=admin()), 404)
    await assert_problem(await client.get("/v1/offers/welcome", headers=admin()), 404)


async def test_bad_offers_are_422_with_the_path_and_change_nothing(client: Client) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"colour": "red"}, "$.colour", "unknown-field"),
        ({"starts_at": "tomorrow"}, "$.starts_at", "bad-time"),
        ({"starts_at": "2026-01-01T00:00:00"}, "$.starts_at", "bad-time"),
        ({"hours": {"mon": ["9-17"]}}, "$.hours.mon[0]", "bad-hours"),
        ({"hours": {"funday": ["09:00-17:00"]}}, "$.hours.funday", "bad-hours"),
        ({"body": "{__class__}"}, "$.body", "bad-template"),
        ({"store_ids": [], "store_tags": []}, "$.store_ids", "no-target"),
        ({"priority": True}, "$.priority", "wrong-type"),
        ({"ends_at": "2019-01-01T00:00:00Z"}, "$.ends_at", "ends-before-starts"),
    ]
    for changes, path, code in cases:
        body = await assert_problem(await put_offer(client, "o1", **changes), 422)
        assert (path, code) in {(e["path"], e["code"]) for e in body["errors"]}, body
    await assert_problem(await client.get("/v1/offers/o1", headers=admin()), 404)
    raw = await client.put(
        "/v1/offers/o1", data=b"{not json", headers={**admin(), "Content-Type": "application/json"}
    )
    await assert_problem(raw, 400)


async def test_one_answer_lists_every_problem_of_an_offer(client: Client) -> None:
    bad = {"title": 3, "colour": "red", "hours": {"funday": [], "mon": ["9-5"]}}
    body = await assert_problem(await put_offer(client, "o1", **bad), 422)
    assert {(e["path"], e["code"]) for e in body["errors"]} == {
        ("$.title", "wrong-type"),
        ("$.colour", "unknown-field"),
        ("$.hours.funday", "bad-hours"),
        ("$.hours.mon[0]", "bad-hours"),
    }
    assert all(e["detail"] for e in body["errors"])
    for offer_id, changes, code in [
        ("has space", {}, "bad-id"),
        ("o1", {"id": "o2"}, "id-mismatch"),
    ]:
        body = await assert_problem(await put_offer(client, offer_id, **changes), 422)
        assert [(e["path"], e["code"]) for e in body["errors"]] == [("$.id", code)]
    listed = await (await client.get("/v1/offers", headers=admin())).json()
    assert listed["offers"] == []


async def test_offers_are_for_admins_only(client: Client) -> None:
    token = await register(client, "d1")
    device = {"Authorization": f"Bearer {token}"}
    await assert_problem(await client.get("/v1/offers"), 401)
    await assert_problem(await client.get("/v1/offers", headers=device), 403)
    forbidden = await client.put("/v1/offers/o1", json=offer_doc(), headers=device)
    await assert_problem(forbidden, 403)
    await assert_problem(await client.get("/v1/stats", headers=device), 403)
    await assert_problem(await client.get("/v1/devices/d1/explain", headers=device), 403)


# the decision on an entry


async def test_an_entry_makes_one_rendered_notification(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "welcome", priority=1)
    await put_offer(client, "better", priority=5, title="Better")
    token = await register(client, "d1")
    answers = await walk_in(client, token, "d1")
    assert all(a["notifications"] == [] for a in answers[:-1])
    [note] = answers[-1]["notifications"]
    assert note["offer_id"] == "better"
    assert note["store_id"] == STORE_ID
    assert note["body"] == "10% off today at Rautamies"
    assert parse_time(note["expires_at"]) - parse_time(note["created_at"]) == 3600
    assert "device_ref" not in note
    assert "push_token" not in note
    assert "decisions" not in answers[-1]


async def test_explain_lists_every_offer_with_its_refusal(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "a-top", priority=9, tiers=["gold"])
    await put_offer(client, "b-chosen", priority=5)
    await put_offer(client, "c-lower", priority=1)
    await put_offer(client, "d-off", active=False)
    await put_offer(client, "e-elsewhere", store_ids=["osm-way-1"])
    token = await register(client, "d1")
    answers = await walk_in(client, token, "d1", "?explain=true")
    [decision] = answers[-1]["decisions"]
    assert decision["store_id"] == STORE_ID
    assert decision["device_refused"] is None
    assert decision["offer_id"] == "b-chosen"
    assert [(c["offer_id"], c["refused"]) for c in decision["considered"]] == [
        ("a-top", "tier-not-matched"),
        ("b-chosen", None),
        ("c-lower", None),
        ("d-off", "inactive"),
        ("e-elsewhere", "store-not-targeted"),
    ]
    assert answers[0]["decisions"] == []


async def test_device_refusals_show_in_explain(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="00:00-24:00")
    await put_offer(client, "welcome")
    token = await register(client, "d1")
    answers = await walk_in(client, token, "d1", "?explain=true")
    [decision] = answers[-1]["decisions"]
    assert decision["device_refused"] == "quiet-hours"
    assert answers[-1]["notifications"] == []
    no_offers = await register(client, "d2", offers=False)
    answers = await walk_in(client, no_offers, "d2", "?explain=true")
    assert answers[-1]["decisions"][0]["device_refused"] == "no-offers-consent"


async def test_device_explain_shows_state_caps_limits_and_decisions(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "welcome", budget=10)
    token = await register(client, "d1")
    await walk_in(client, token, "d1")
    resp = await client.get("/v1/devices/d1/explain", headers=admin())
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    report = await resp.json()
    assert report["device_cap"]["used"] == 1
    assert report["device_cap"]["cap"] == 2
    [store] = report["stores"]
    assert store["store_id"] == STORE_ID
    assert store["visit"]["state"] == "confirmed"
    entry_at = parse_time(store["decisions"][0]["entry_at"])
    assert parse_time(store["cooldown_ends_at"]) == entry_at + 21_600
    [offer] = report["offers"]
    assert (offer["used"], offer["per_device_limit"], offer["budget_spent"]) == (1, 1, 1)
    assert parse_time(offer["cooldown_ends_at"]) > time.time()
    assert abs(parse_time(report["now"]) - time.time()) < 60
    await assert_problem(await client.get("/v1/devices/nobody/explain", headers=admin()), 404)


@pytest.mark.usefixtures("store")
async def test_the_notification_is_written_to_the_outbox_and_counted(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "welcome")
    token = await register(client, "d1")
    answers = await walk_in(client, token, "d1")
    [note] = answers[-1]["notifications"]
    resp = await client.get("/v1/stats?by=offer", headers=admin())
    stats = await resp.json()
    [row] = stats["rows"]
    assert row["offer_id"] == "welcome"
    assert (row["entries"], row["notifications"]) == (1, 1)
    assert row["rates"]["notifications_rate"] == 1.0
    by_store = await (await client.get("/v1/stats", headers=admin())).json()
    assert [(r["store_id"], r["entries"]) for r in by_store["rows"]] == [(STORE_ID, 1)]
    assert note["notification_id"]


async def test_stats_refuses_bad_windows(client: Client) -> None:
    for query in (
        "?by=device",
        "?from=yesterday",
        "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
    ):
        await assert_problem(await client.get(f"/v1/stats{query}", headers=admin()), 422)
    ok = await client.get("/v1/stats?from=0&to=3600&by=offer", headers=admin())
    assert (await ok.json())["rows"] == []

"""The catalogue's guards over HTTP, on both stores: nothing applied until confirmed.

- An upload that would remove more than half of the catalogue (an empty one wipes it
  all) answers 409 ``catalogue-shrink`` unless ``?allow_shrink=true``.
- Likely swapped longitude and latitude, without GEOFENCE_REGION, give a warning naming
  the store, and a real upload with one answers 409 ``confirm-move`` unless
  ``?confirm_move=true``. A dry run shows both and is never refused.
- One upload at a time: another answers 409 ``upload-in-progress`` with Retry-After.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient

from geofence.http.keys import CATALOGUE
from tests.conftest import admin
from tests.http.test_ops import assert_problem
from tests.security.test_upload_off_loop import grid_collection

Client = TestClient[Any, Any]

SAMPLE = json.loads(Path("stores.geojson").read_text(encoding="utf-8"))
LIMERICK = json.loads(Path("tests/data/limerick_fences.geojson").read_text(encoding="utf-8"))


def helsinki(n: int, start: int = 0) -> list[dict[str, Any]]:
    return copy.deepcopy(SAMPLE["features"][start : start + n])


def collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def swapped(feature: dict[str, Any], new_id: str | None = None) -> dict[str, Any]:
    """The feature with each position's longitude and latitude exchanged."""
    out = copy.deepcopy(feature)
    rings = out["geometry"]["coordinates"]
    out["geometry"]["coordinates"] = [[[p[1], p[0]] for p in ring] for ring in rings]
    out["id"] = new_id or out["id"]
    return out


async def put(client: Client, doc: Any, query: str = "") -> Any:
    return await client.put(f"/v1/stores{query}", json=doc, headers=admin())


async def catalogue(client: Client) -> Any:
    return await (await client.get("/v1/stores", headers=admin())).json()


async def loaded(client: Client, n: int) -> None:
    assert (await put(client, collection(helsinki(n)))).status == 200
    assert len((await catalogue(client))["features"]) == n


def codes(report: dict[str, Any]) -> list[str]:
    return [w["code"] for w in report["warnings"]]


# --- shrink ------------------------------------------------------------------------------


async def test_an_empty_upload_does_not_wipe_the_catalogue(client: Client) -> None:
    await loaded(client, 6)
    before = await catalogue(client)
    problem = await assert_problem(await put(client, collection([])), 409)
    assert problem["type"].endswith("/catalogue-shrink")
    assert problem["report"]["shrink"] == {"removed": 6, "of": 6}
    assert await catalogue(client) == before


async def test_a_dry_run_shows_the_shrink_and_is_not_refused(client: Client) -> None:
    await loaded(client, 6)
    before = await catalogue(client)
    resp = await put(client, collection([]), "?dry_run=true")
    assert resp.status == 200
    report = await resp.json()
    assert report["shrink"] == {"removed": 6, "of": 6}
    assert len(report["removed"]) == 6
    assert codes(report) == ["catalogue-shrink"]
    assert await catalogue(client) == before


async def test_removing_more_than_half_needs_allow_shrink(client: Client) -> None:
    await loaded(client, 6)
    before = await catalogue(client)
    two = collection(helsinki(2))
    problem = await assert_problem(await put(client, two), 409)
    assert problem["report"]["shrink"] == {"removed": 4, "of": 6}
    assert await catalogue(client) == before
    resp = await put(client, two, "?allow_shrink=true")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["shrink"] == {"removed": 4, "of": 6}
    assert len((await catalogue(client))["features"]) == 2


async def test_removing_half_is_allowed(client: Client) -> None:
    await loaded(client, 6)
    resp = await put(client, collection(helsinki(3)))
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert report["shrink"] == {"removed": 3, "of": 6}
    assert codes(report) == []


async def test_allow_shrink_wipes_on_purpose(client: Client) -> None:
    await loaded(client, 6)
    resp = await put(client, collection([]), "?allow_shrink=true")
    assert resp.status == 200, await resp.text()
    assert (await catalogue(client))["features"] == []


# --- likely swapped coordinates ---------------------------------------------------------------


async def test_a_store_swapped_into_the_current_extent_needs_confirm_move(client: Client) -> None:
    await loaded(client, 6)
    before = await catalogue(client)
    doc = collection([*helsinki(6), swapped(helsinki(1, start=10)[0], "new-store")])
    dry = await (await put(client, doc, "?dry_run=true")).json()
    [warning] = [w for w in dry["warnings"] if w["code"] == "swapped-coordinates"]
    assert (warning["id"], warning["feature"]) == ("new-store", 6)
    problem = await assert_problem(await put(client, doc), 409)
    assert problem["type"].endswith("/confirm-move")
    assert "swapped-coordinates" in codes(problem["report"])
    assert await catalogue(client) == before
    resp = await put(client, doc, "?confirm_move=true")
    assert resp.status == 200, await resp.text()
    assert "new-store" in {f["id"] for f in (await catalogue(client))["features"]}


async def test_a_catalogue_moved_far_away_needs_confirm_move(client: Client) -> None:
    await loaded(client, 6)
    before = await catalogue(client)
    doc = collection([swapped(f) for f in helsinki(6)])  # the same ids, every one swapped
    problem = await assert_problem(await put(client, doc), 409)
    report = problem["report"]
    assert report["changed"] == sorted(f["id"] for f in helsinki(6))
    [moved] = [w for w in report["warnings"] if w["code"] == "catalogue-moved"]
    assert moved["distance_km"] > 1000
    assert moved["far"] == 6
    assert await catalogue(client) == before
    assert (await put(client, doc, "?confirm_move=true")).status == 200


async def test_on_an_empty_catalogue_a_store_is_judged_by_the_rest(client: Client) -> None:
    doc = collection([*helsinki(6), swapped(helsinki(1, start=10)[0], "odd-one")])
    problem = await assert_problem(await put(client, doc), 409)
    [warning] = problem["report"]["warnings"]
    assert (warning["code"], warning["id"], warning["feature"]) == (
        "swapped-coordinates",
        "odd-one",
        6,
    )
    assert (await catalogue(client))["features"] == []


async def test_stores_in_two_far_cities_are_not_taken_for_swapped(client: Client) -> None:
    doc = collection([*helsinki(6), *copy.deepcopy(LIMERICK["features"])])
    resp = await put(client, doc)
    assert resp.status == 200, await resp.text()
    assert codes(await resp.json()) == []


async def test_one_store_upserted_swapped_needs_confirm_move(client: Client) -> None:
    await loaded(client, 6)
    feature = swapped(helsinki(1, start=10)[0], "upserted")
    path = "/v1/stores/upserted"
    problem = await assert_problem(await client.put(path, json=feature, headers=admin()), 409)
    assert problem["type"].endswith("/confirm-move")
    assert [w["id"] for w in problem["report"]["warnings"]] == ["upserted"]
    assert (await client.get(path, headers=admin())).status == 404
    resp = await client.put(f"{path}?confirm_move=true", json=feature, headers=admin())
    assert resp.status == 201, await resp.text()


# --- one upload at a time ------------------------------------------------------------------


async def test_a_second_upload_meanwhile_is_told_to_retry(client: Client) -> None:
    body = msgspec.json.encode(grid_collection(3000))
    headers = {**admin(), "Content-Type": "application/json"}
    big = asyncio.ensure_future(
        client.put("/v1/stores?dry_run=true", data=io.BytesIO(body), headers=headers)
    )
    worker = client.app[CATALOGUE].uploads
    for _ in range(1000):
        if worker.busy or big.done():
            break
        await asyncio.sleep(0.005)
    assert worker.busy, "the big upload was never seen in progress"
    refused = await put(client, collection(helsinki(1)), "?dry_run=true")
    problem = await assert_problem(refused, 409)
    assert problem["type"].endswith("/upload-in-progress")
    assert int(refused.headers["Retry-After"]) > 0
    assert (await big).status == 200
    assert (await put(client, collection(helsinki(1)), "?dry_run=true")).status == 200

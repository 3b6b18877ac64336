"""The store catalogue over HTTP (contract §3), on both stores."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import admin
from tests.http.test_ops import assert_problem

SAMPLE = json.loads(Path("stores.geojson").read_text(encoding="utf-8"))


def collection(n: int) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": copy.deepcopy(SAMPLE["features"][:n])}


async def put_all(client: TestClient[Any, Any], doc: Any, query: str = "") -> Any:
    return await client.put(f"/v1/stores{query}", json=doc, headers=admin())


async def test_replace_reports_the_diff(client: TestClient[Any, Any]) -> None:
    first = await put_all(client, collection(5))
    assert first.status == 200
    report = await first.json()
    ids = [f["id"] for f in SAMPLE["features"][:5]]
    assert report["stores"] == 5
    assert report["cells"] > 0
    assert report["added"] == sorted(ids)
    assert report["changed"] == report["removed"] == []
    second_doc = collection(4)
    second_doc["features"][0]["properties"]["margin_m"] = 10
    report2 = await (await put_all(client, second_doc)).json()
    assert report2["version"] > report["version"]
    assert (report2["added"], report2["changed"], report2["removed"]) == ([], [ids[0]], [ids[4]])


async def test_dry_run_reports_without_applying(client: TestClient[Any, Any]) -> None:
    await put_all(client, collection(2))
    before = await (await client.get("/v1/stores", headers=admin())).json()
    dry = await (await put_all(client, collection(6), "?dry_run=true")).json()
    assert dry["dry_run"] is True
    assert len(dry["added"]) == 4
    after = await (await client.get("/v1/stores", headers=admin())).json()
    assert after == before


async def test_invalid_upload_lists_every_problem_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    await put_all(client, collection(3))
    before = await (await client.get("/v1/stores", headers=admin())).json()
    doc = collection(4)
    doc["features"][1]["id"] = doc["features"][0]["id"]  # duplicate id
    ring = doc["features"][3]["geometry"]["coordinates"][0]
    ring.pop()  # unclosed ring
    problem = await assert_problem(await put_all(client, doc), 422)
    codes = {(e.get("feature"), e["code"]) for e in problem["errors"]}
    assert (1, "duplicate-id") in codes
    assert (3, "unclosed-ring") in codes
    after = await (await client.get("/v1/stores", headers=admin())).json()
    assert after == before


async def test_round_trip_of_one_store(client: TestClient[Any, Any]) -> None:
    feature = copy.deepcopy(SAMPLE["features"][0])
    store_id = feature["id"]
    created = await client.put(f"/v1/stores/{store_id}", json=feature, headers=admin())
    assert created.status == 201
    got = await (await client.get(f"/v1/stores/{store_id}", headers=admin())).json()
    assert got["id"] == store_id
    assert got["properties"]["name"] == feature["properties"]["name"]
    feature["properties"]["dwell_s"] = 30
    updated = await client.put(f"/v1/stores/{store_id}", json=feature, headers=admin())
    assert updated.status == 200
    listing = await (await client.get("/v1/stores", headers=admin())).json()
    assert [f["properties"].get("dwell_s") for f in listing["features"]] == [30]
    assert (await client.delete(f"/v1/stores/{store_id}", headers=admin())).status == 204
    await assert_problem(await client.delete(f"/v1/stores/{store_id}", headers=admin()), 404)
    await assert_problem(await client.get(f"/v1/stores/{store_id}", headers=admin()), 404)


async def test_pings_see_a_new_catalogue_without_restart(make_client: Any) -> None:
    """Two apps on one store: a catalogue written through one is loaded by the other."""
    writer, reader = await make_client(), await make_client()
    await put_all(writer, collection(7))
    for _ in range(100):
        ready = await (await reader.get("/readyz")).json()
        if ready["stores"] == 7:
            break
        await asyncio.sleep(0.02)
    assert ready["stores"] == 7


async def test_bad_query_flag_is_400(client: TestClient[Any, Any]) -> None:
    await assert_problem(await put_all(client, collection(1), "?dry_run=maybe"), 400)


def bad_upload_cases() -> list[tuple[str, dict[str, Any]]]:
    """The cases of the bad-upload corpus by file name, in name order."""
    paths = sorted(Path("tests/data/bad_uploads").glob("*.json"))
    return [(path.name, json.loads(path.read_text(encoding="utf-8"))) for path in paths]


async def test_bad_upload_corpus_never_500(make_client: Any) -> None:
    """Each case of the corpus is refused with its code; options become settings."""
    for name, case in await asyncio.to_thread(bad_upload_cases):
        options = case.get("options", {})
        if "region" in options:
            options = {**options, "region": tuple(options["region"])}
        client = await make_client(**options)
        resp = await put_all(client, case["upload"])
        problem = await assert_problem(resp, 422)
        codes = {e["code"] for e in problem["errors"]}
        assert case["expect_code"] in codes, (name, codes)


async def test_ids_outside_the_pattern_are_422_in_the_body_and_in_the_url(
    client: TestClient[Any, Any],
) -> None:
    doc = collection(1)
    doc["features"][0]["id"] = "x" * 1_000_000  # an over-long string: a 422, briefly told
    problem = await assert_problem(await put_all(client, doc), 422)
    [error] = problem["errors"]
    assert error["code"] == "invalid-id"
    assert len(error["detail"]) < 300
    feature = copy.deepcopy(SAMPLE["features"][0])
    del feature["id"]
    for raw in ("a%00b", "%E2%80%AEevil", "with%20space", "s" * 129):
        resp = await client.put(f"/v1/stores/{raw}", json=feature, headers=admin())
        problem = await assert_problem(resp, 422)
        assert [(e["code"], e["path"]) for e in problem["errors"]] == [("invalid-id", "store_id")]
    assert (await client.get("/v1/stores", headers=admin())).status == 200
    listing = await (await client.get("/v1/stores", headers=admin())).json()
    assert listing["features"] == []


async def test_malformed_json_upload_is_400_and_changes_nothing(
    client: TestClient[Any, Any],
) -> None:
    headers = {**admin(), "Content-Type": "application/json"}
    for body in (b'{"type": "FeatureCollection", "features": [', b"\xff\xfe", b"[" * 100_000):
        resp = await client.put("/v1/stores", data=body, headers=headers)
        await assert_problem(resp, 400)

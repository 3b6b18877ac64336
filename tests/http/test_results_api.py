"""Issue 27's API over HTTP, on both stores: stats as time series with the lift, control
groups end to end, conversions and their attribution, the catalogue's version history,
GeoPackage and zipped Shapefile uploads, and the offer preview."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
from aiohttp.test_utils import TestClient

from geofence.domain.stats import BUCKET_S, DAY_S, counter
from geofence.ports import StateStore
from tests.conftest import INGEST_KEY, admin
from tests.http.test_offers_api import STORE_ID, put_offer, walk_in
from tests.http.test_ops import assert_problem
from tests.http.test_pings_api import register

Client = TestClient[Any, Any]
INGEST = {"Authorization": f"Bearer {INGEST_KEY}"}
DAY0 = 1_781_481_600  # a UTC midnight


async def get_json(client: Client, url: str) -> Any:
    resp = await client.get(url, headers=admin())
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def convert(client: Client, device_id: str, at: float, **extra: Any) -> Any:
    body = {"device_id": device_id, "at": at, **extra}
    resp = await client.post("/v1/conversions", json=body, headers=INGEST)
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def walked_in(make_client: Any, device_id: str = "d1", **offer: Any) -> tuple[Client, str]:
    """A client with an offer ``welcome`` at the sample store, and a device whose walk in
    made an entry 170 s ago; the device's token."""
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "welcome", **offer)
    token = await register(client, device_id)
    await walk_in(client, token, device_id)
    return client, token


# time series


async def test_counts_land_in_their_buckets_with_zeros_between(
    client: Client, store: StateStore
) -> None:
    await store.add_counts(DAY0 + BUCKET_S, {counter("entries", "store", "s1"): 2})
    await store.add_counts(DAY0 + 2 * DAY_S + 5 * BUCKET_S, {counter("entries", "store", "s1"): 3})
    window = f"?from={DAY0}&to={DAY0 + 3 * DAY_S}&bucket=day"
    report = await get_json(client, f"/v1/stats{window}")
    assert (report["by"], report["bucket"]) == ("store", "day")
    [line] = report["series"]
    assert line["key"] == "s1"
    assert [(p["at"], p["entries"]) for p in line["points"]] == [
        ("2026-06-15T00:00:00Z", 2),
        ("2026-06-16T00:00:00Z", 0),
        ("2026-06-17T00:00:00Z", 3),
    ]
    hours = await get_json(
        client, f"/v1/stats?from={DAY0}&to={DAY0 + 3 * BUCKET_S}&bucket=hour&store_id=s1"
    )
    assert [p["entries"] for p in hours["series"][0]["points"]] == [0, 2, 0]
    other = await get_json(client, f"/v1/stats{window}&store_id=s9")
    assert [p["entries"] for p in other["series"][0]["points"]] == [0, 0, 0]
    totals = await get_json(client, f"/v1/stats?from={DAY0}&to={DAY0 + 3 * DAY_S}")
    assert totals["totals"]["entries"] == 5
    assert "series" not in totals


async def test_a_series_past_its_cap_or_of_an_unknown_bucket_is_422(client: Client) -> None:
    for query in (
        f"?from={DAY0}&to={DAY0 + 32 * DAY_S}&bucket=hour",
        f"?from={DAY0}&to={DAY0 + 31 * DAY_S}&bucket=week",
    ):
        await assert_problem(await client.get(f"/v1/stats{query}", headers=admin()), 422)
    month = await get_json(client, f"/v1/stats?from={DAY0}&to={DAY0 + 31 * DAY_S}&bucket=hour")
    assert month["series"] == []
    year = await get_json(client, f"/v1/stats?from={DAY0}&to={DAY0 + 400 * DAY_S}&bucket=day")
    assert year["series"] == []


# control groups and conversions, end to end


async def test_a_control_group_is_held_out_counted_and_charged_nothing(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "half", control_pct=50, budget=100)
    answers = []
    for n in range(16):
        token = await register(client, f"d{n}")
        answers.append(await walk_in(client, token, f"d{n}", "?explain=true"))
    decisions = [a[-1]["decisions"][0] for a in answers]
    held = [d for d in decisions if d["group"] == "control"]
    notified = sum(len(a[-1]["notifications"]) for a in answers)
    assert held
    assert notified
    assert len(held) + notified == 16
    assert all(d["notification_id"] is None and d["offer_id"] == "half" for d in held)
    assert all(c["refused"] == "control-group" for d in held for c in d["considered"])
    offer = await get_json(client, "/v1/offers/half")
    assert offer["budget_spent"] == notified
    assert offer["control_pct"] == 50
    stats = await get_json(
        client, "/v1/stats?by=offer&bucket=hour&from=" + str(time.time() - 3_600)
    )
    [line] = stats["series"]
    assert sum(p["control"] for p in line["points"]) == len(held)
    assert sum(p["notifications"] for p in line["points"]) == notified
    [lift] = stats["lift"]
    assert (lift["treated"]["entries"], lift["control"]["entries"]) == (notified, len(held))
    assert lift["enough_data"] is False  # 16 devices tell nothing yet


async def test_a_conversion_goes_to_the_latest_eligible_entry_once(make_client: Any) -> None:
    client, _ = await walked_in(make_client)
    now = time.time()
    assert await convert(client, "d1", now, value=9.9, store_id="elsewhere") == {
        "attributed": None,
        "group": None,
    }
    assert await convert(client, "d1", now, store_id=STORE_ID) == {
        "attributed": "welcome",
        "group": "treated",
    }
    assert await convert(client, "d1", now) == {"attributed": None, "group": None}
    stats = await get_json(client, "/v1/stats?by=offer")
    [lift] = stats["lift"]
    assert lift["treated"] == {"entries": 1, "conversions": 1, "rate": 1.0}
    day = await get_json(client, "/v1/stats?by=store&bucket=day")
    assert sum(p["conversions"] for p in day["series"][0]["points"]) == 1


async def test_a_conversion_outside_the_window_is_not_attributed(make_client: Any) -> None:
    client, _ = await walked_in(make_client, attribution_window_s=60)  # entered 170 s ago
    assert (await convert(client, "d1", time.time()))["attributed"] is None


async def test_conversions_of_unknown_or_unconsenting_devices(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson", quiet_hours="off")
    await put_offer(client, "welcome")
    body = {"device_id": "nobody", "at": time.time()}
    await assert_problem(await client.post("/v1/conversions", json=body, headers=INGEST), 404)
    await assert_problem(await client.post("/v1/conversions", json=body, headers=admin()), 403)
    bad = {**body, "at": "yesterday"}
    await assert_problem(await client.post("/v1/conversions", json=bad, headers=INGEST), 422)
    token = await register(client, "quiet", offers=False)
    await walk_in(client, token, "quiet")
    assert await convert(client, "quiet", time.time()) == {"attributed": None, "group": None}


async def test_the_attribution_state_is_exported_and_erased_with_the_device(
    make_client: Any, store: StateStore
) -> None:
    client, token = await walked_in(make_client)
    device = {"Authorization": f"Bearer {token}"}
    export = await (await client.get("/v1/devices/d1/export", headers=device)).json()
    [kept] = [k for k in export["keys"] if k["name"].endswith("eligible")]
    assert kept["ttl_s"] is not None
    assert 0 < kept["ttl_s"] <= 7 * DAY_S
    assert (await client.delete("/v1/devices/d1", headers=device)).status == 204
    assert await store.device_keys(export["device_ref"]) == {}


# the catalogue: uploads of files, and the history


def helsinki() -> gpd.GeoDataFrame:
    """The sample stores in the Finnish national grid, with their tags as text."""
    frame = gpd.read_file("stores.geojson").to_crs("EPSG:3067")
    frame["tags"] = frame["tags"].map(",".join)
    return frame.drop(columns=["shops"])


async def upload(client: Client, data: bytes, media: str, query: str = "") -> Any:
    headers = {**admin(), "Content-Type": media}
    resp = await client.put(f"/v1/stores{query}", data=data, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_geopackage_is_converted_checked_and_applied(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "stores.gpkg"
    helsinki().to_file(path, driver="GPKG")
    media = "application/geopackage+sqlite3"
    report = await upload(client, path.read_bytes(), media, "?dry_run=true")
    assert report["dry_run"] is True
    assert report["stores"] == 162
    assert any("EPSG:3067" in note for note in report["notes"])
    applied = await upload(client, path.read_bytes(), media)
    assert applied["dry_run"] is False
    assert len(applied["added"]) == 162
    stores = await (await client.get("/v1/stores", headers=admin())).json()
    assert len(stores["features"]) == 162
    lng, lat = stores["features"][0]["geometry"]["coordinates"][0][0]
    assert 24 < lng < 26
    assert 60 < lat < 61
    [version] = await get_json(client, "/v1/stores/versions")
    assert (version["stores"], version["added"], version["changed"]) == (162, 162, 0)


async def test_a_zipped_shapefile_is_converted_like_the_cli_would(
    client: Client, tmp_path: Path
) -> None:
    folder = tmp_path / "shp"
    folder.mkdir()
    helsinki().head(10).to_file(folder / "stores.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for part in folder.iterdir():
            archive.write(part, part.name)
    report = await upload(client, buffer.getvalue(), "application/zip", "?dry_run=true")
    assert report["stores"] == 10
    broken = await client.put(
        "/v1/stores", data=b"PK not a zip", headers={**admin(), "Content-Type": "application/zip"}
    )
    await assert_problem(broken, 400)


async def test_geojson_still_uploads_with_its_own_media_type(client: Client) -> None:
    data = await asyncio.to_thread(Path("stores.geojson").read_bytes)
    report = await upload(client, data, "application/geo+json", "?dry_run=true")
    assert report["stores"] == 162
    assert "notes" not in report
    await upload(client, data, "application/geo+json")
    shrunk = json.loads(data)
    shrunk["features"] = shrunk["features"][:150]
    await upload(client, json.dumps(shrunk).encode(), "application/json")
    versions = await get_json(client, "/v1/stores/versions")
    assert [(v["version"], v["added"], v["removed"]) for v in versions] == [
        (2, 0, 12),
        (1, 162, 0),
    ]


# the offer preview


async def test_the_preview_renders_the_body_for_a_store(make_client: Any) -> None:
    client = await make_client(stores="stores.geojson")
    await put_offer(client, "welcome")
    shown = await get_json(client, f"/v1/offers/welcome/preview?store_id={STORE_ID}")
    assert shown == {"title": "Welcome in", "body": "10% off today at Rautamies"}
    for url in (
        f"/v1/offers/nope/preview?store_id={STORE_ID}",
        "/v1/offers/welcome/preview?store_id=nowhere",
        "/v1/offers/welcome/preview",
    ):
        await assert_problem(await client.get(url, headers=admin()), 404)

"""The console in a real Chromium (issue 27): log in, stores, uploads, offers, results,
log out; the policy holds (no CSP violation on any page) and axe finds nothing serious.
Each test takes a screenshot of its page: the README's tour in docs/console/ when
GEOFENCE_SCREENSHOTS=1, else into the test's own temporary folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe

from geofence.domain.delivery import sign
from scripts.make_stores import store_of
from tests.browser.conftest import ADMIN_KEY, GATEWAY_SECRET, Console, Service
from tests.http.test_results_api import helsinki
from tools.processes import ROOT

HELSINKI = ROOT / "tests" / "data" / "helsinki_store_polygons.geojson"
SDK_KEY = "sys-sdk-key-000001"  # service_env's
RAUTAMIES = "osm-way-88777732"
INSIDE = (60.1774, 24.9495)  # in Rautamies
OUTSIDE = (60.1790, 24.9480)
SERIOUS = ("serious", "critical")


def helsinki_stores() -> list[dict[str, Any]]:
    """The 162 Helsinki footprints as stores, as scripts/make_stores.py makes them."""
    return [store_of(f) for f in json.loads(HELSINKI.read_text())["features"]]


def upload_file(tmp_path: Path, features: list[dict[str, Any]]) -> Path:
    path = tmp_path / "stores.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def swapped(feature: dict[str, Any]) -> dict[str, Any]:
    rings = feature["geometry"]["coordinates"]
    geometry = {"type": "Polygon", "coordinates": [[[y, x] for x, y in r] for r in rings]}
    return {**feature, "geometry": geometry}


def unclosed(feature: dict[str, Any]) -> dict[str, Any]:
    [outer, *holes] = feature["geometry"]["coordinates"]
    geometry = {"type": "Polygon", "coordinates": [outer[:-1], *holes]}
    return {**feature, "geometry": geometry}


# log in and out


def test_a_wrong_key_is_refused_and_the_right_one_opens_the_stores(console: Console) -> None:
    page = console.log_in("not-the-admin-key-0000")
    page.wait_for_selector("#login-error:has-text('not an admin key')")
    assert page.is_hidden("#stores")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#stores-summary:has-text('Catalogue version')")
    assert page.is_hidden("#login")


def test_the_key_lives_in_the_tab_only_and_goes_on_log_out(console: Console) -> None:
    page = console.log_in()
    page.wait_for_selector("#stores:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('geofence.adminKey')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert ADMIN_KEY not in page.url
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#nav")


def test_a_refused_key_sends_the_user_back_to_the_login(console: Console) -> None:
    # the key is in the tab before the console's script runs (set after a first load, it
    # could meet that load's own start and be refused and cleared before the reload)
    console.page.add_init_script(
        "sessionStorage.setItem('geofence.adminKey', 'revoked-key-000000000')"
    )
    page = console.open()
    page.wait_for_selector("#login-error:has-text('log in again')")
    assert page.evaluate("sessionStorage.length") == 0


def test_every_console_answer_carries_the_policy(console: Console) -> None:
    response = console.page.goto(f"{console.service.url}/console/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


# stores


def test_the_helsinki_upload_draws_162_shapes_and_applies(console: Console, tmp_path: Path) -> None:
    service = console.service
    service.replace_stores([])
    before = service.catalogue_version()
    page = console.log_in()
    page.wait_for_selector("#stores-summary:has-text(': 0 stores')")
    page.set_input_files("#upload-file", upload_file(tmp_path, helsinki_stores()))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report:has-text('Dry run: 162 stores, 162 added')")
    assert service.catalogue_version() == before  # a dry run changes nothing
    page.click("#upload-report button:has-text('Apply')")
    page.wait_for_selector(f"#stores-summary:has-text('version {before + 1}: 162 stores')")
    assert page.locator("#map path.store").count() == 162
    assert service.catalogue_version() == before + 1
    page.fill("#store-query", "rautamies")
    page.wait_for_selector("#stores-summary:has-text('1 match')")
    assert page.locator("#map path.store").count() == 1
    page.fill("#store-query", "")
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    console.screenshot("stores")


def test_circles_and_margins_are_drawn_and_search_filters_them(console: Console) -> None:
    [polygon, plain] = [dict(f) for f in helsinki_stores()[:2]]
    polygon["properties"] = {**polygon["properties"], "margin_m": 40}
    kiosk = {
        "type": "Feature",
        "id": "kiosk-1",
        "properties": {"name": "Kiosk", "tags": ["kiosk"], "radius_m": 30, "margin_m": 20},
        "geometry": {"type": "Point", "coordinates": [24.9410, 60.1700]},
    }
    console.service.replace_stores([polygon, plain, kiosk])
    page = console.log_in()
    page.wait_for_selector("#stores-summary:has-text(': 3 stores')")
    assert page.locator("#map path.store").count() == 3
    assert page.locator("#map path.margin").count() == 2  # the plain store has none
    page.fill("#store-query", "KIOSK-1")
    page.wait_for_selector("#stores-summary:has-text('1 match')")
    assert page.locator("#map path.store").count() == 1
    assert page.locator("#map path.margin").count() == 1
    assert page.locator("#store-list tbody tr").all_text_contents() == [
        "kiosk-1Kioskkioskcircle 30 m, margin 20 m"
    ]


def test_a_broken_ring_and_a_swapped_store_are_flagged_and_nothing_applied(
    console: Console, tmp_path: Path
) -> None:
    service = console.service
    stores = helsinki_stores()
    service.replace_stores(stores)
    before = service.catalogue_version()
    stores[3], stores[5] = unclosed(stores[3]), swapped(stores[5])
    page = console.log_in()
    page.wait_for_selector("#stores-summary:has-text('162 stores')")
    page.set_input_files("#upload-file", upload_file(tmp_path, stores))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report li[data-code='swapped-coordinates']")
    report = page.text_content("#upload-report") or ""
    assert "nothing was applied" in report
    row = page.locator("#upload-report table tbody tr")
    assert row.count() == 1
    assert row.locator("td").all_text_contents()[:3] == ["3", stores[3]["id"], "unclosed-ring"]
    assert stores[5]["id"] in page.text_content("li[data-code='swapped-coordinates']")  # type: ignore[operator]
    assert page.locator("#map path.problem").count() == 2  # the broken one and the swapped one
    assert page.locator("#upload-report button:has-text('Apply')").count() == 0
    assert service.catalogue_version() == before
    console.screenshot("upload")


def test_a_geopackage_is_checked_by_the_service_and_a_broken_one_said_plainly(
    console: Console, tmp_path: Path
) -> None:
    before = console.service.catalogue_version()
    gpkg = tmp_path / "stores.gpkg"
    helsinki().to_file(gpkg, driver="GPKG")  # in EPSG:3067: converted back by the service
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(b"SQLite format 3\x00" + bytes(64))
    page = console.log_in()
    page.wait_for_selector("#stores-summary:has-text('Catalogue version')")
    page.set_input_files("#upload-file", gpkg)
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report:has-text('Dry run: 162 stores')")
    page.set_input_files("#upload-file", broken)
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-report:has-text('Not applied')")
    assert console.service.catalogue_version() == before


# offers


def test_a_bad_field_is_shown_next_to_it_then_the_fixed_offer_saves(console: Console) -> None:
    service = console.service
    service.call("DELETE", "/v1/offers/autumn")
    page = console.log_in()
    page = console.go("offers")
    fields = {
        "id": "autumn",
        "title": "Autumn at {store_name}",
        "body": "10 % off today at {store_name}",
        "store_ids": RAUTAMIES,
        "starts_at": "2030-02-01T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
    }
    for name, value in fields.items():
        page.fill(f"#offer-{name}", value)
    page.click("#offer-form button[type=submit]")
    error = page.locator("#offer-ends_at-error")
    error.wait_for()
    assert "after starts_at" in (error.text_content() or "")
    ends = page.locator("#offer-ends_at")
    assert ends.get_attribute("aria-invalid") == "true"
    assert "offer-ends_at-error" in (ends.get_attribute("aria-describedby") or "").split()
    assert service.call("GET", "/v1/offers/autumn")[0] == 404
    console.screenshot("offers")
    page.fill("#offer-ends_at", "2030-03-01T00:00:00Z")
    page.click("#offer-form button[type=submit]")
    page.wait_for_selector("#offers-status:has-text('autumn saved')")
    assert page.text_content("#offer-ends_at-error") == ""
    status, offer = service.call("GET", "/v1/offers/autumn")
    assert status == 200
    assert offer["ends_at"] == "2030-03-01T00:00:00Z"
    assert offer["active"]
    page.click("button:has-text('Pause autumn')")
    page.wait_for_selector("#offers-status:has-text('autumn paused')")
    assert service.call("GET", "/v1/offers/autumn")[1]["active"] is False


def test_the_preview_renders_the_body_for_the_chosen_store(console: Console) -> None:
    console.service.replace_stores(helsinki_stores())
    page = console.log_in()
    page = console.go("offers")
    page.wait_for_selector(f"#preview-store option[value='{RAUTAMIES}']", state="attached")
    page.select_option("#preview-store", RAUTAMIES)
    page.fill("#offer-body", "Welcome to {store_name}")
    page.wait_for_selector("#preview:has-text('Welcome to Rautamies')")


# results


def walk_in(service: Service, device_id: str) -> list[dict[str, Any]]:
    """Register a device and walk it into Rautamies (dwell 120 s): its notifications."""
    consent = {"location": True, "offers": True}
    status, body = service.call(
        "POST", "/v1/devices", {"device_id": device_id, "consent": consent}, key=SDK_KEY
    )
    assert status == 201, body
    now = time.time()
    answer: dict[str, Any] = {}
    for (lat, lng), ago in [(OUTSIDE, 400), (INSIDE, 300), (INSIDE, 240), (INSIDE, 170)]:
        ping = {"device_id": device_id, "lat": lat, "lon": lng, "accuracy_m": 8, "ts": now - ago}
        status, answer = service.call("POST", "/v1/pings", ping, key=body["device_token"])
        assert status == 200, answer
    notes: list[dict[str, Any]] = answer["notifications"]
    return notes


def receipt(service: Service, notification_id: str, event: str) -> None:
    raw = json.dumps({"notification_id": notification_id, "event": event, "at": time.time()})
    signature = sign(GATEWAY_SECRET, raw.encode(), int(time.time()))
    status, body = service.call("POST", "/v1/receipts", raw=raw.encode(), signature=signature)
    assert status == 200, body


def scripted_funnel(service: Service) -> dict[str, int]:
    """Three walkers into Rautamies, an offer for it, receipts for two of the notifications:
    the counts this adds to Rautamies' funnel."""
    service.replace_stores(helsinki_stores())
    offer = {
        "title": "Hello",
        "body": "Hello at {store_name}",
        "store_ids": [RAUTAMIES],
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
    }
    assert service.call("PUT", "/v1/offers/funnel", offer)[0] in (200, 201)
    walkers = [f"walker-{n}-{time.time_ns()}" for n in range(3)]
    notes = [n for device_id in walkers for n in walk_in(service, device_id)]
    assert len(notes) == 3
    for note, events in zip(notes, [["delivered", "opened"], ["delivered"], []], strict=True):
        for event in events:
            receipt(service, note["notification_id"], event)
    return {"entries": 3, "notifications": 3, "delivered": 2, "opened": 1, "redeemed": 0}


# the chart against the real counters of GET /v1/stats?bucket=day


def test_after_scripted_pings_and_receipts_the_chart_shows_the_daily_counts(
    console: Console,
) -> None:
    service = console.service
    today = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    _, before = service.call("GET", f"/v1/stats?by=store&bucket=day&from={today}")
    was: dict[str, int] = next(
        (s["points"][-1] for s in before["series"] if s["key"] == RAUTAMIES), {}
    )
    added = scripted_funnel(service)
    page = console.log_in()
    page = console.go("results")
    page.select_option("#results-bucket", "day")
    page.click("#results-form button[type=submit]")
    page.wait_for_selector("#chart canvas")
    page.select_option("#results-key", RAUTAMIES)
    page.click("#results-form button[type=submit]")
    page.wait_for_selector(f"#results-tables td:text-is('{today}')")
    shown = row_of(page, "Funnel by day", today)
    assert {k: shown[k] for k in added} == {k: n + was.get(k, 0) for k, n in added.items()}
    console.screenshot("results")


def row_of(page: Any, caption: str, key: str) -> dict[str, int]:
    table = page.locator(f"table:has(caption:has-text('{caption}'))")
    headers = table.locator("thead th").all_text_contents()
    row = table.locator(f"tbody tr:has(td:text-is('{key}'))").locator("td").all_text_contents()
    return {h: int(v) for h, v in zip(headers[1:], row[1:], strict=True)}


# accessibility


@pytest.mark.parametrize("name", ["login", "stores", "offers", "results"])
def test_the_pages_have_no_serious_accessibility_violations(console: Console, name: str) -> None:
    if name == "login":
        page = console.open()
        page.wait_for_selector("#login:not([hidden])")
    else:
        console.log_in().wait_for_selector("#stores-summary:not(:empty)")
        page = console.go(name)
        page.wait_for_selector(f"#{name} [role=status]:not(:empty)")
    if name == "login":
        console.screenshot("login")
    violations = Axe().run(page).response["violations"]
    serious = [(v["id"], v["impact"], v["help"]) for v in violations if v["impact"] in SERIOUS]
    assert serious == []


# the chart: the page against the documented bucket answer (the backend's half comes later)

DAYS = ["2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"]


def bucketed_stats(by: str) -> dict[str, Any]:
    """An answer of the documented shape: two stores over two days, one offer's lift."""

    def point(at: str, entries: int) -> dict[str, Any]:
        return {
            "at": at,
            "entries": entries,
            "notifications": entries - 1,
            "delivered": 1,
            "opened": 1,
            "redeemed": 0,
            "control": 1,
            "conversions": 0,
        }

    series = [
        {"key": k, "points": [point(DAYS[0], n), point(DAYS[1], n + 2)]}
        for k, n in (("store-a", 3), ("store-b", 5))
    ]
    lift = [
        {
            "offer_id": "autumn",
            "treated": {"entries": 9, "conversions": 1, "rate": 0.111},
            "control": {"entries": 2, "conversions": 0, "rate": 0.0},
            "lift": 0.111,
            "interval": {"low": -0.2, "high": 0.4, "method": "Newcombe"},
            "enough_data": False,
            "note": "",
        }
    ]
    return {
        "from": DAYS[0],
        "to": "2030-01-03T00:00:00Z",
        "by": by,
        "bucket": "day",
        "series": series,
        "lift": lift,
    }


def test_the_chart_draws_the_documented_daily_series(console: Console) -> None:
    page = console.log_in()
    page.wait_for_selector("#stores-summary:not(:empty)")

    def answer(route: Any) -> None:
        route.fulfill(json=bucketed_stats("store"))

    page.route("**/v1/stats?*", answer)
    page = console.go("results")
    page.wait_for_selector("#chart canvas")
    assert row_of(page, "Funnel by day", DAYS[0])["entries"] == 3 + 5
    assert row_of(page, "Funnel by day", DAYS[1])["entries"] == 5 + 7
    page.select_option("#results-key", "store-b")
    page.click("#results-form button[type=submit]")
    page.wait_for_selector(f"#results-tables tr:has(td:text-is('{DAYS[1]}')) td:text-is('7')")
    lift = page.locator("table:has(caption:has-text('Lift')) tbody td").all_text_contents()
    assert lift[0] == "autumn"
    assert "Newcombe" in lift[4]
    assert lift[5] == "Too small to tell."

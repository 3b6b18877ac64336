"""The console's files and their headers (issue 27 item 1); the pages are in tests/browser/."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.config import OSM_TILES, Settings, SettingsError, validate
from geofence.http import console
from geofence.http.app import create_app
from geofence.http.console import STATIC

DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
}


async def console_client(aiohttp_client: Any, settings: Settings, **changes: Any) -> Any:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings.replace(**changes)))
    return client


def policy(resp: Any) -> dict[str, str]:
    parts = (p.strip().split(" ", 1) for p in resp.headers["Content-Security-Policy"].split(";"))
    return dict(parts)


def assert_secured(resp: Any) -> None:
    found = policy(resp)
    for name, value in DIRECTIVES.items():
        assert found[name] == value, found
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in resp.headers


async def test_console_redirects_to_its_folder(aiohttp_client: Any, settings: Settings) -> None:
    client = await console_client(aiohttp_client, settings)
    resp = await client.get("/console", allow_redirects=False)
    assert resp.status == 308
    assert resp.headers["Location"] == "/console/"


async def test_the_page_is_served_with_a_strict_policy(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await console_client(aiohttp_client, settings)
    resp = await client.get("/console/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert_secured(resp)
    assert resp.headers["Cache-Control"] == "no-cache"
    assert 'src="js/main.js"' in await resp.text()


async def test_the_tile_host_is_the_only_other_image_source(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await console_client(aiohttp_client, settings, tile_url=OSM_TILES)
    images = policy(await client.get("/console/"))["img-src"].split()
    assert images == ["'self'", "data:", "https://tile.openstreetmap.org"]
    client = await console_client(aiohttp_client, settings, tile_url="")
    assert policy(await client.get("/console/"))["img-src"].split() == ["'self'", "data:"]
    subdomains = "https://{s}.tiles.example.org:8443/{z}/{x}/{y}.png"
    client = await console_client(aiohttp_client, settings, tile_url=subdomains)
    images = policy(await client.get("/console/"))["img-src"].split()
    assert images[-1] == "https://*.tiles.example.org:8443"


async def test_config_tells_the_page_its_tiles(aiohttp_client: Any, settings: Settings) -> None:
    client = await console_client(
        aiohttp_client, settings, tile_url="", tile_attribution="Our maps"
    )
    resp = await client.get("/console/config.json")
    assert resp.status == 200
    assert_secured(resp)
    assert await resp.json() == {"tile_url": "", "tile_attribution": "Our maps"}


async def test_vendored_files_are_cached_for_good(aiohttp_client: Any, settings: Settings) -> None:
    client = await console_client(aiohttp_client, settings)
    resp = await client.get("/console/vendor/leaflet-1.9.4/leaflet.js")
    assert resp.status == 200
    assert_secured(resp)
    assert "immutable" in resp.headers["Cache-Control"]
    assert (await client.get("/console/js/api.js")).headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/console/missing.js",
        "/console/vendor/",
        "/console/..%2fx",
        "/console/a%00b",
        "/console/" + "a" * 5000,
    ],
)
async def test_a_missing_file_is_a_problem(
    aiohttp_client: Any, settings: Settings, path: str
) -> None:
    client = await console_client(aiohttp_client, settings)
    resp = await client.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert_secured(resp)


@pytest.mark.parametrize(
    "name",
    [
        "../http/console.py",
        "../../geofence/config.py",
        "/etc/passwd",
        "vendor",
        "",
        "a\0b",
        "a" * 5000,
    ],
)
def test_nothing_outside_the_folder_is_served(name: str) -> None:
    # the client tidies dot segments away before sending: the resolver is asked directly
    assert console._resolve(name) is None
    assert console._resolve("index.html") == (STATIC / "index.html").resolve()


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not re.match(r"(#|data:)", value):
                self.found.append(value)


async def test_every_file_the_page_names_is_served(aiohttp_client: Any, settings: Settings) -> None:
    links = Links()
    links.feed((STATIC / "index.html").read_text())
    assert len(links.found) >= 6
    client = await console_client(aiohttp_client, settings)
    for link in links.found:
        assert (await client.get(f"/console/{link}")).status == 200, link
    licences = ["vendor/leaflet-1.9.4/LICENSE", "vendor/uplot-1.6.32/LICENSE"]
    assert all((STATIC / name).is_file() for name in licences)


def test_an_empty_tile_url_means_no_tiles() -> None:
    assert Settings.from_env({"GEOFENCE_TILE_URL": ""}).tile_url == ""
    assert Settings.from_env({}).tile_url == OSM_TILES


@pytest.mark.parametrize(
    "url",
    [
        "ftp://tiles.example.org/{z}/{x}/{y}.png",
        "https://tiles.example.org/{z}/{x}.png",
        "https://tiles.example.org;script-src *;/{z}/{x}/{y}.png",
        "tiles/{z}/{x}/{y}.png",
    ],
)
def test_a_tile_url_that_cannot_go_into_the_policy_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="GEOFENCE_TILE_URL"):
        validate(Settings.from_env({"GEOFENCE_TILE_URL": url}))

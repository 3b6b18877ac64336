"""The marketers' console: static pages served beside the API, and the map settings they read.

The files are public (no secret in them): every datum comes from the admin API, called by
the page with the key the user typed (kept in ``sessionStorage``, sent as a Bearer header;
no cookie, so no cross-site request can carry it). Every answer here carries a strict
Content-Security-Policy.
"""

from __future__ import annotations

import urllib.parse
from importlib import resources
from pathlib import Path

from aiohttp import web

from geofence.config import Settings
from geofence.http.errors import problem_response
from geofence.http.keys import SETTINGS
from geofence.http.schemas import json_response

STATIC = Path(str(resources.files("geofence.console") / "static"))
# vendored libraries sit under a versioned folder: a new version is a new URL
VENDOR_PREFIX = "vendor/"
VENDOR_CACHE = "public, max-age=31536000, immutable"
OWN_CACHE = "no-cache"  # our own files keep their names: revalidate (ETag / Last-Modified)
FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}


async def redirect(request: web.Request) -> web.StreamResponse:
    """``GET /console``: the pages' relative links need the trailing slash."""
    moved = web.Response(status=308, headers={"Location": "/console/"})
    return _secured(moved, request.app[SETTINGS], cache=OWN_CACHE)


async def config(request: web.Request) -> web.StreamResponse:
    """``GET /console/config.json``: what the page needs before the user logs in."""
    settings = request.app[SETTINGS]
    response = json_response(
        {"tile_url": settings.tile_url, "tile_attribution": settings.tile_attribution}
    )
    return _secured(response, settings, cache=OWN_CACHE)


async def static(request: web.Request) -> web.StreamResponse:
    """``GET /console/{path}``: one of the console's files, never one outside its folder."""
    settings = request.app[SETTINGS]
    name = request.match_info.get("path") or "index.html"
    path = _resolve(name)
    if path is None:
        missing = problem_response(404, "not-found", f"no console file {name!r}")
        return _secured(missing, settings, cache="no-store")
    cache = VENDOR_CACHE if name.startswith(VENDOR_PREFIX) else OWN_CACHE
    return _secured(web.FileResponse(path), settings, cache=cache)


def _resolve(name: str) -> Path | None:
    """Looked up among the files the package ships, never on the filesystem: a name that
    is not one of them (``..``, a NUL, 5,000 characters) is simply not found."""
    return FILES.get(name)


def _secured(response: web.StreamResponse, settings: Settings, *, cache: str) -> web.StreamResponse:
    response.headers["Content-Security-Policy"] = content_security_policy(settings.tile_url)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = cache
    return response


def content_security_policy(tile_url: str) -> str:
    """Nothing but our own files, data: images (Leaflet's) and the tile server's images."""
    images = " ".join(["'self'", "data:", *_tile_origin(tile_url)])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def _tile_origin(tile_url: str) -> list[str]:
    if not tile_url:
        return []
    parts = urllib.parse.urlsplit(tile_url)
    # Leaflet's {s} picks a subdomain: allow them all
    host = (parts.netloc or "").replace("{s}.", "*.")
    return [f"{parts.scheme}://{host}"]

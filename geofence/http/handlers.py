"""Thin handlers: check the caller, parse, call the service, respond."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from geofence.http.auth import allow
from geofence.http.errors import problem_response
from geofence.http.keys import CATALOGUE, METRICS, SETTINGS, STORE
from geofence.http.openapi import openapi_document
from geofence.http.schemas import flag, json_response, read_body
from geofence.persistence import warnings_of
from geofence.service.uploads import UPLOAD_FORMATS, UploadFormat

# operations


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    catalogue = request.app[CATALOGUE]
    await request.app[STORE].check()  # Unavailable -> 503
    loaded = catalogue.loaded
    if not catalogue.ready or loaded is None:
        return problem_response(
            503, "not-ready", "The store catalogue is not loaded yet.", headers={"Retry-After": "1"}
        )
    persistence = await request.app[STORE].persistence()
    return json_response(
        {
            "status": "ready",
            "catalogue_version": loaded.version,
            "stores": len(loaded.index),
            "persistence": persistence,
            "warnings": warnings_of(persistence),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_request: web.Request) -> web.Response:
    return json_response(openapi_document(), verbatim=True)


# stores (contract §3)


async def put_stores(request: web.Request) -> web.Response:
    allow(request, "admin")
    flags = _flags(request, "dry_run", "repair", "allow_shrink", "confirm_move")
    # raw bytes: the upload worker decodes them, so a large upload never stalls the loop
    limit = request.app[SETTINGS].max_upload_bytes
    body = await read_body(request, limit=limit, also=UPLOAD_FORMATS.keys())
    media = upload_format(request.content_type)
    report = await request.app[CATALOGUE].replace(body, media=media, **flags)
    return json_response(report)


def upload_format(content_type: str) -> UploadFormat:
    """What an upload's ``Content-Type`` says it is: a JSON type is GeoJSON."""
    return UPLOAD_FORMATS.get(content_type, "geojson")


async def store_versions(request: web.Request) -> web.Response:
    """``GET /v1/stores/versions``: the catalogue's history, newest first, counts only."""
    allow(request, "admin")
    return json_response(await request.app[CATALOGUE].versions())


def _flags(request: web.Request, *names: str) -> dict[str, bool]:
    return {name: flag(request, name) for name in names}


async def get_stores(request: web.Request) -> web.Response:
    allow(request, "admin")
    return json_response(
        await request.app[CATALOGUE].features(), content_type="application/geo+json", verbatim=True
    )


async def put_store(request: web.Request) -> web.Response:
    allow(request, "admin")
    flags = _flags(request, "repair", "confirm_move")
    body = await read_body(request, limit=request.app[SETTINGS].max_upload_bytes)
    store_id = request.match_info["store_id"]
    result = await request.app[CATALOGUE].upsert(store_id, body, **flags)
    return json_response(result, status=201 if result["created"] else 200)


async def get_store(request: web.Request) -> web.Response:
    allow(request, "admin")
    feature = await request.app[CATALOGUE].feature(request.match_info["store_id"])
    return json_response(feature, content_type="application/geo+json", verbatim=True)


async def delete_store(request: web.Request) -> web.Response:
    allow(request, "admin")
    await request.app[CATALOGUE].delete(request.match_info["store_id"])
    return web.Response(status=204)

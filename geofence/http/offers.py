"""Offer, stats and explain handlers (contract §5-6): admin only, thin."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from geofence.domain.callers import CallerKind
from geofence.domain.stats import BUCKET_SIZES, BYS, MAX_POINTS, MAX_WINDOW_S, Bucket, By
from geofence.domain.times import format_time, parse_time_param
from geofence.http.auth import allow
from geofence.http.keys import CATALOGUE, DEVICES, OFFERS, SETTINGS
from geofence.http.offer_schema import MAX_ID_LEN, parse_offer
from geofence.http.schemas import json_response, private_json, read_json, unprocessable

DEFAULT_WINDOW_S = 7 * 86_400
ADMIN: tuple[CallerKind, ...] = ("admin",)
INGEST: tuple[CallerKind, ...] = ("ingest",)


class ConversionIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A purchase a trusted backend reports; ``value`` is taken and not kept."""

    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)] | None = None
    at: float | str
    value: Annotated[float, msgspec.Meta(ge=0)] | None = None


async def put_offer(request: web.Request) -> web.Response:
    allow(request, "admin")
    doc = await read_json(request, Any, limit=request.app[SETTINGS].max_body_bytes)
    offer = parse_offer(request.match_info["offer_id"], doc)
    view, created = await request.app[OFFERS].put(offer)
    return json_response(view, status=201 if created else 200)


async def get_offer(request: web.Request) -> web.Response:
    allow(request, "admin")
    return json_response(await request.app[OFFERS].get(request.match_info["offer_id"]))


async def list_offers(request: web.Request) -> web.Response:
    allow(request, "admin")
    return json_response({"offers": await request.app[OFFERS].all()})


async def delete_offer(request: web.Request) -> web.Response:
    allow(request, "admin")
    await request.app[OFFERS].delete(request.match_info["offer_id"])
    return web.Response(status=204)


async def stats(request: web.Request) -> web.Response:
    """``GET /v1/stats?from=&to=&by=store|offer[&bucket=hour|day][&store_id=|&offer_id=]``:
    the funnel's totals, or with ``bucket`` its time series; by offer, the lift."""
    allow(request, "admin")
    end = _time_query(request, "to", time.time())
    start = _time_query(request, "from", end - DEFAULT_WINDOW_S)
    if not 0 < end - start <= MAX_WINDOW_S:
        detail = f"must be before ?to, at most {MAX_WINDOW_S // 86_400} days apart"
        raise unprocessable("?from", "bad-window", detail)
    by = _by(request)
    key = request.query.get(f"{by}_id") or None
    bucket = _bucket(request, start, end)
    offers = request.app[OFFERS]
    if bucket is None:
        report = await offers.stats(start, end, by, key)
    else:
        report = await offers.series(start, end, by, bucket, key)
    return json_response({**report, "from": format_time(start), "to": format_time(end)})


def _bucket(request: web.Request, start: float, end: float) -> Bucket | None:
    """``?bucket``, and a window of at most ``MAX_POINTS`` of them."""
    bucket = request.query.get("bucket")
    if bucket is None or bucket == "":
        return None
    if bucket not in BUCKET_SIZES:
        raise unprocessable("?bucket", "bad-query", f"takes hour or day, not {bucket!r}")
    points = (end - start) / BUCKET_SIZES[bucket]
    if points > MAX_POINTS[bucket]:
        detail = f"at most {MAX_POINTS[bucket]} {bucket}s apart with ?bucket={bucket}"
        raise unprocessable("?from", "too-many-points", detail)
    return "hour" if bucket == "hour" else "day"


async def preview(request: web.Request) -> web.Response:
    """``GET /v1/offers/{offer_id}/preview?store_id=``: the body rendered for a store."""
    allow(request, "admin")
    fence = await request.app[CATALOGUE].fence(request.query.get("store_id", ""))
    offer_id = request.match_info["offer_id"]
    return json_response(await request.app[OFFERS].preview(offer_id, fence.name or fence.id))


async def post_conversion(request: web.Request) -> web.Response:
    """``POST /v1/conversions`` (ingest key): attributed to the device's latest eligible
    entry in its offer's window, once; 202 either way."""
    caller = allow(request, "ingest")
    body = await read_json(request, ConversionIn, limit=request.app[SETTINGS].max_body_bytes)
    at = _time_field(body.at)
    profile = await request.app[DEVICES].authorize(caller, body.device_id, INGEST)
    taken = await request.app[OFFERS].convert(profile, body.store_id, at)
    answer: dict[str, str | None] = {"attributed": None, "group": None}
    if taken is not None:
        answer = {"attributed": taken.offer_id, "group": taken.group}
    return json_response(answer, status=202)


def _time_field(value: float | str) -> float:
    try:
        return parse_time_param(value)
    except ValueError as e:
        raise unprocessable("$.at", "bad-time", str(e)) from None


async def device_explain(request: web.Request) -> web.Response:
    """``GET /v1/devices/{device_id}/explain``: why the device got what it got."""
    caller = allow(request, "admin")
    devices = request.app[DEVICES]
    profile = await devices.authorize(caller, request.match_info["device_id"], ADMIN)
    report = await request.app[OFFERS].explain(profile.ref, time.time())
    return private_json({"device_ref": profile.ref, **report})


def _time_query(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_time_param(raw)
    except ValueError as e:
        raise unprocessable(f"?{name}", "bad-time", str(e)) from None


def _by(request: web.Request) -> By:
    by = request.query.get("by", "store")
    if by not in BYS:
        raise unprocessable("?by", "bad-query", f"takes store or offer, not {by!r}")
    return "store" if by == "store" else "offer"

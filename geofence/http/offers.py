"""Offer, stats and explain handlers (contract §5-6): admin only, thin."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from geofence.domain.callers import CallerKind
from geofence.domain.stats import BYS, MAX_WINDOW_S, By
from geofence.domain.times import format_time, parse_time_param
from geofence.http.auth import allow
from geofence.http.keys import DEVICES, OFFERS, SETTINGS
from geofence.http.offer_schema import parse_offer
from geofence.http.schemas import json_response, private_json, read_json, unprocessable

DEFAULT_WINDOW_S = 7 * 86_400
ADMIN: tuple[CallerKind, ...] = ("admin",)


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
    """``GET /v1/stats?from=&to=&by=store|offer``: the funnel, counted by the hour."""
    allow(request, "admin")
    end = _time_query(request, "to", time.time())
    start = _time_query(request, "from", end - DEFAULT_WINDOW_S)
    if not 0 < end - start <= MAX_WINDOW_S:
        detail = f"must be before ?to, at most {MAX_WINDOW_S // 86_400} days apart"
        raise unprocessable("?from", "bad-window", detail)
    report = await request.app[OFFERS].stats(start, end, _by(request))
    return json_response({**report, "from": format_time(start), "to": format_time(end)})


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

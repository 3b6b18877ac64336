"""Ping handlers (contract §5): parse at the edge, authorize the device, hand to the service."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from geofence.domain.callers import Caller, CallerKind
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import GeofenceError, NotFound
from geofence.domain.model import Ping
from geofence.http.auth import allow
from geofence.http.errors import HTTPProblem
from geofence.http.keys import COALESCER, DEVICES, PINGS, SETTINGS
from geofence.http.schemas import (
    decode,
    flag,
    invalid,
    json_response,
    read_body,
    unprocessable,
)
from geofence.service.devices import located
from geofence.service.pings import PingResult

MAX_BATCH = 1000

Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class PingIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    device_id: DeviceId
    lat: Lat
    lon: Lon
    accuracy_m: float
    ts: float | str
    mocked: bool = False

    def to_ping(self) -> Ping:
        return Ping(
            lat=self.lat,
            lng=self.lon,
            accuracy_m=self.accuracy_m,
            ts=parse_ts(self.ts),
            mocked=self.mocked,
        )


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    pings: list[msgspec.Raw]


def parse_ts(ts: float | str) -> float:
    """RFC 3339 with an offset, or epoch seconds; anything else is a 422 at ``$.ts``."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise invalid("Expected an RFC 3339 timestamp - at `$.ts`") from None
        if parsed.tzinfo is None:
            raise invalid("Expected an RFC 3339 timestamp with an offset - at `$.ts`")
        return parsed.timestamp()
    if not math.isfinite(ts):  # msgspec already refuses these; belt and braces
        raise invalid("Expected a finite number - at `$.ts`")
    return float(ts)


async def post_ping(request: web.Request) -> web.Response:
    caller = allow(request, "device")
    body = await read_body(request, limit=request.app[SETTINGS].max_body_bytes)
    ping_in = decode(body, PingIn)
    ping = ping_in.to_ping()
    if not flag(request, "explain"):
        result = await request.app[COALESCER].handle(caller, ping_in.device_id, ping)
        # most pings make no event and no notification: nothing in them is a time
        return json_response(result, verbatim=not (result.events or result.notifications))
    profile = await _located_device(request, caller, ping_in.device_id, ("device",))
    [result] = await request.app[PINGS].handle(profile.ref, [ping], explain=True)
    return json_response(result)


async def post_batch(request: web.Request) -> web.Response:
    caller = allow(request, "device", "ingest")
    body = await read_body(request, limit=request.app[SETTINGS].max_body_bytes)
    parsed = _parse_all(body)
    results: list[Any] = [p if isinstance(p, dict) else None for p in parsed]
    groups: dict[str, Group] = {}
    for i, item in enumerate(parsed):
        if not isinstance(item, dict):
            groups.setdefault(item[0], []).append((i, item[1]))
    for items, answers in await _device_groups(request, caller, groups):
        for (i, _), result in zip(items, answers, strict=True):
            results[i] = result
    return json_response({"results": results})


class _TypedBatch(msgspec.Struct, forbid_unknown_fields=True):
    pings: list[PingIn]


_typed_batch = msgspec.json.Decoder(_TypedBatch)
Parsed = tuple[str, Ping] | dict[str, Any]  # (device id, ping), or the ping's invalid result


def _parse_all(body: bytes) -> list[Parsed]:
    """Each ping of a batch, or its error. A batch whose pings are all valid is decoded in
    one go; otherwise ping by ping, so that each bad one gets its own error."""
    try:
        batch = _typed_batch.decode(body)
        if len(batch.pings) <= MAX_BATCH:
            return [(p.device_id, p.to_ping()) for p in batch.pings]
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, HTTPProblem):
        pass  # the way below says what is wrong, and where
    one_by_one = decode(body, BatchIn)
    if len(one_by_one.pings) > MAX_BATCH:
        raise unprocessable("$.pings", "batch-too-large", f"at most {MAX_BATCH} pings in one batch")
    return [_parse_one(raw, i) for i, raw in enumerate(one_by_one.pings)]


def _parse_one(raw: msgspec.Raw, position: int) -> Parsed:
    try:
        ping_in = decode(bytes(raw), PingIn)
        return ping_in.device_id, ping_in.to_ping()
    except HTTPProblem as e:
        errors = [
            {**err, "path": f"$.pings[{position}]" + err["path"][1:]} for err in e.errors or []
        ]
        return {"status": "invalid", "reason": e.code, "errors": errors}


Group = list[tuple[int, Ping]]


async def _device_groups(
    request: web.Request, caller: Caller, groups: dict[str, Group]
) -> list[tuple[Group, Sequence[PingResult | dict[str, Any]]]]:
    """Each device's pings through the service in one go, its profile and stored state
    read in one round trip for all; one device's failure (unknown, no consent, erased
    meanwhile) fails its pings alone, a wrong credential the batch."""
    profiles, loaded = await request.app[DEVICES].authorize_many(
        caller, list(groups), ("device", "ingest")
    )
    sending: list[tuple[Group, DeviceProfile]] = []
    out: list[tuple[Group, Sequence[PingResult | dict[str, Any]]]] = []
    for items, authorized in zip(groups.values(), profiles, strict=True):
        profile = located(authorized)
        if isinstance(profile, DeviceProfile):
            sending.append((items, profile))
        else:
            out.append((items, _failed(items, profile)))
    answers = await request.app[PINGS].handle_many(
        [(profile.ref, [ping for _, ping in items]) for items, profile in sending],
        explain=flag(request, "explain"),
        loaded=loaded,
    )
    for (items, _), answer in zip(sending, answers, strict=True):
        out.append((items, _failed(items, answer) if isinstance(answer, NotFound) else answer))
    return out


def _failed(items: Group, error: GeofenceError) -> list[dict[str, Any]]:
    return [{"status": "invalid", "reason": error.code, "errors": []} for _ in items]


async def _located_device(
    request: web.Request, caller: Caller, device_id: str, allow: tuple[CallerKind, ...]
) -> DeviceProfile:
    profile = located(await request.app[DEVICES].authorize(caller, device_id, allow))
    if isinstance(profile, GeofenceError):
        raise profile
    return profile

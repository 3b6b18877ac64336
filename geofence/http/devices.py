"""Device handlers (contract §4): check the caller first, then parse, call the service, respond.

The edge (``geofence.http.edge``) has authenticated the caller, and refused a device
token naming another device than the path's, before the body is read, so a refused
request learns nothing about what a valid body looks like. Answers that carry a token or
personal data are not cached.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from geofence.domain.callers import CallerKind
from geofence.domain.devices import ProfilePatch, Registration
from geofence.http.auth import allow
from geofence.http.keys import DEVICES, SETTINGS
from geofence.http.schemas import private_json, read_json

OWNER: tuple[CallerKind, ...] = ("device",)
OWNER_OR_ADMIN: tuple[CallerKind, ...] = ("device", "admin")


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    device_token: str


async def register(request: web.Request) -> web.Response:
    """``POST /v1/devices``: the app's sdk key registers a new device (201), or the same
    install, proving it with its install secret, gets a new token for its device (200)."""
    allow(request, "sdk")
    body = await read_json(request, Registration, limit=request.app[SETTINGS].max_body_bytes)
    device_id, token, created = await request.app[DEVICES].register(body)
    answer = Registered(device_id=device_id, device_token=token)
    return private_json(answer, status=201 if created else 200)


async def rotate_token(request: web.Request) -> web.Response:
    """``POST /v1/devices/{device_id}/token``: the device's new token; the old one is
    refused from then on."""
    devices = request.app[DEVICES]
    caller = allow(request, *OWNER)
    device_id = request.match_info["device_id"]
    profile = await devices.authorize(caller, device_id, OWNER)
    token = await devices.rotate(profile)
    return private_json(Registered(device_id=device_id, device_token=token))


async def patch(request: web.Request) -> web.Response:
    """``PATCH /v1/devices/{device_id}``: the device itself changes its profile or consent."""
    devices = request.app[DEVICES]
    caller = allow(request, *OWNER)
    device_id = request.match_info["device_id"]
    profile = await devices.authorize(caller, device_id, OWNER)
    changes = await read_json(request, ProfilePatch, limit=request.app[SETTINGS].max_body_bytes)
    updated = await devices.update(profile, changes)
    return private_json(devices.view(device_id, updated))


async def export(request: web.Request) -> web.Response:
    """``GET /v1/devices/{device_id}/export``: the device itself, or an admin."""
    devices = request.app[DEVICES]
    caller = allow(request, *OWNER_OR_ADMIN)
    device_id = request.match_info["device_id"]
    profile = await devices.authorize(caller, device_id, OWNER_OR_ADMIN)
    return private_json(await devices.export(device_id, profile))


async def delete(request: web.Request) -> web.Response:
    """``DELETE /v1/devices/{device_id}``: the device itself, or an admin; 204 every time."""
    caller = allow(request, *OWNER_OR_ADMIN)
    await request.app[DEVICES].erase_as(caller, request.match_info["device_id"])
    return web.Response(status=204)

"""The public edge: every request is authenticated before any work is done for it.

One middleware, so that no route can forget it. Before the handler runs, and so before
the body is read and before anything from the request reaches a log line or a metric
label, it

- lets the public routes through (probes, metrics, the OpenAPI document; receipts, which
  carry a signature of their body rather than a credential);
- identifies the caller: a configured key (constant time) or a device token whose tag
  verifies (one HMAC, no store read), the credentials verified lately remembered
  (``auth.Identities``: no HMAC for a device's next ping); anything else is 401, and
  takes from the bucket of its client address (429 once that is empty), as does a
  registration with the public sdk key;
- where the path names a device, refuses a device token of another device with the
  same 404 as a device that does not exist.

The handlers then ask ``allow(request, kinds...)`` for the caller, which answers 403 for
the wrong kind of credential.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import hdrs, web

from geofence.domain.callers import Caller
from geofence.domain.errors import NotFound, Unauthorized
from geofence.http.auth import CALLER, IDENTITIES
from geofence.http.errors import Handler
from geofence.http.keys import DEVICES, PING_GATE

logger = logging.getLogger(__name__)

PUBLIC_ROUTES: Final = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/receipts"}
)
PUBLIC_PREFIXES: Final = ("/console",)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _public(request):
        return await handler(request)
    caller = _caller(request)
    if caller.kind == "sdk":  # the sdk key is public: it is one stranger among others
        request.app[PING_GATE].admit_stranger(request.remote)
    if caller.kind == "device" and not _names_the_path(request, caller):
        # the ref is the token's, which its tag proves we issued: never the path's id
        logger.info("device token refused device=%s reason=other-device", caller.device_ref)
        raise NotFound("No such device.")
    request[CALLER] = caller
    return await handler(request)


def _public(request: web.Request) -> bool:
    """Public routes, and requests that match no route (404/405 say nothing)."""
    if request.match_info.http_exception is not None:
        return True
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    return route in PUBLIC_ROUTES or route.startswith(PUBLIC_PREFIXES)


def _names_the_path(request: web.Request, caller: Caller) -> bool:
    """Whether a device token is the own of the device the path names, if it names one."""
    device_id = request.match_info.get("device_id")
    return device_id is None or request.app[DEVICES].names(caller, device_id)


def _caller(request: web.Request) -> Caller:
    authorization = request.headers.get(hdrs.AUTHORIZATION, "")
    try:
        return request.app[IDENTITIES].caller(authorization)
    except Unauthorized:
        request.app[PING_GATE].admit_stranger(request.remote)
        raise

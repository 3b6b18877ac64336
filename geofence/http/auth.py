"""Who is calling (contract §1): admin, sdk, ingest keys from settings; device tokens.

Keys are compared in constant time against every configured key, so the time taken says
nothing about which key (or how much of one) matched. A device token is
``<device ref>.<secret>``: the ref names the device whose stored token hash must match,
which ``DeviceService.authorize`` checks for every device-scoped route.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import sys
from collections.abc import Iterable
from typing import Literal

import msgspec
from aiohttp import web

from geofence.config import Settings
from geofence.domain.callers import Caller, CallerKind
from geofence.domain.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

KeyKind = Literal["admin", "sdk", "ingest"]

# ``<ref>.<secret>``: anything else is not a device token and answers 401 on every route
_DEVICE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,256}", re.ASCII)


class Credentials(msgspec.Struct, frozen=True):
    admin: tuple[str, ...]
    sdk: tuple[str, ...]
    ingest: tuple[str, ...]
    dev_mode: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        if not settings.dev_mode:
            return cls(settings.admin_keys, settings.sdk_keys, settings.ingest_keys)
        return cls.generated()

    @classmethod
    def generated(cls) -> Credentials:
        """Development mode: fresh keys, shown once on stderr, loudly."""
        creds = cls(
            admin=(f"dev-admin-{secrets.token_urlsafe(16)}",),
            sdk=(f"dev-sdk-{secrets.token_urlsafe(16)}",),
            ingest=(f"dev-ingest-{secrets.token_urlsafe(16)}",),
            dev_mode=True,
        )
        logger.warning("DEVELOPMENT MODE: no GEOFENCE_*_KEYS configured; generated keys in use")
        print(
            "geofence development mode keys (set GEOFENCE_ADMIN_KEYS, GEOFENCE_SDK_KEYS and "
            f"GEOFENCE_INGEST_KEYS in production):\n  admin  {creds.admin[0]}\n"
            f"  sdk    {creds.sdk[0]}\n  ingest {creds.ingest[0]}",
            file=sys.stderr,
            flush=True,
        )
        return creds

    def kind_of(self, token: str) -> KeyKind | None:
        found: KeyKind | None = None
        for kind, keys in (("admin", self.admin), ("sdk", self.sdk), ("ingest", self.ingest)):
            if _any_equal(token, keys):
                found = kind  # type: ignore[assignment]
        return found


def _any_equal(token: str, keys: Iterable[str]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    return matched


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Send Authorization: Bearer <key or device token>.")
    return token.strip()


def identify(request: web.Request, creds: Credentials) -> Caller:
    token = bearer(request)
    kind = creds.kind_of(token)
    if kind is not None:
        return Caller(kind, token)
    if _DEVICE_TOKEN.fullmatch(token):
        return Caller("device", token)
    raise unauthorized("The credential is not valid.")


def require(request: web.Request, creds: Credentials, *allowed: CallerKind) -> Caller:
    """The caller, if its kind may call this route: 401 unknown, 403 wrong kind."""
    caller = identify(request, creds)
    if caller.kind not in allowed:
        raise forbidden(caller.kind)
    return caller


CREDENTIALS = web.AppKey("credentials", Credentials)


def allow(request: web.Request, *allowed: CallerKind) -> Caller:
    """``require`` with the app's credentials: the one check at the top of a handler."""
    return require(request, request.app[CREDENTIALS], *allowed)


def forbidden(kind: CallerKind) -> Forbidden:
    return Forbidden(f"A {kind} credential may not call this.")


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail)

"""Who is calling (contract §1): admin, sdk, ingest keys from settings; device tokens.

Keys are compared in constant time against every configured key, so the time taken says
nothing about which key (or how much of one) matched. A device token carries a tag
(``geofence.domain.callers``) that is checked here, with no store read; the device's
stored token hash is then checked by ``DeviceService.authorize`` on every device-scoped
route. A credential is ASCII: anything else (aiohttp hands undecodable bytes over as
surrogates) is refused like any other wrong credential.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sys
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec
from aiohttp import web

from geofence.config import Settings
from geofence.domain.callers import Caller, CallerKind
from geofence.domain.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

KeyKind = Literal["admin", "sdk", "ingest"]


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
        if not token.isascii():  # no configured key matches; and compare_digest needs bytes
            return None
        found: KeyKind | None = None
        for kind, keys in (("admin", self.admin), ("sdk", self.sdk), ("ingest", self.ingest)):
            if _any_equal(token, keys):
                found = kind  # type: ignore[assignment]
        return found


def _any_equal(token: str, keys: Iterable[str]) -> bool:
    matched = False
    raw = token.encode("ascii")
    for key in keys:
        matched |= hmac.compare_digest(raw, key.encode())
    return matched


def bearer(authorization: str) -> str:
    """The credential of an ``Authorization`` header; 401 if it is missing or not ASCII."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("Send Authorization: Bearer <key or device token>.")
    if not token.isascii():
        raise unauthorized("The credential is not valid.")
    return token


def identify(
    authorization: str, creds: Credentials, device_ref: Callable[[str], str | None]
) -> Caller:
    """Who sends ``authorization``: a configured key, or a device token whose tag
    ``device_ref`` verifies; else 401."""
    token = bearer(authorization)
    kind = creds.kind_of(token)
    if kind is not None:
        return Caller(kind, token)
    if device_ref(token) is not None:
        return Caller("device", token)
    raise unauthorized("The credential is not valid.")


IDENTITIES_KEPT = 16_384  # credentials remembered per process: about 3 MB


class Identities:
    """:func:`identify` with the callers of the credentials it verified lately kept, by
    their whole ``Authorization`` header: every ping carries one, and a device sends the
    same one again and again. Only a verified credential is kept (a refused one is
    checked anew each time, and cannot fill the table); at ``kept`` the oldest goes.
    What is kept is what ``identify`` would answer again: a key's kind, or that a device
    token's tag is ours, which no later change undoes (the stored hash of the token,
    which rotation and erasure change, is still checked for every device-scoped call)."""

    __slots__ = ("_callers", "creds", "device_ref", "kept")

    def __init__(
        self,
        creds: Credentials,
        device_ref: Callable[[str], str | None],
        *,
        kept: int = IDENTITIES_KEPT,
    ) -> None:
        self.creds = creds
        self.device_ref = device_ref
        self.kept = kept
        self._callers: dict[str, Caller] = {}

    def caller(self, authorization: str) -> Caller:
        """Who sends ``authorization``; 401 as :func:`identify`."""
        known = self._callers.get(authorization)
        if known is not None:
            return known
        caller = identify(authorization, self.creds, self.device_ref)
        if len(self._callers) >= self.kept:
            del self._callers[next(iter(self._callers))]
        self._callers[authorization] = caller
        return caller

    def __len__(self) -> int:
        return len(self._callers)


CREDENTIALS = web.AppKey("credentials", Credentials)
IDENTITIES = web.AppKey("identities", Identities)
CALLER = web.RequestKey("caller", Caller)


def allow(request: web.Request, *allowed: CallerKind) -> Caller:
    """The caller the edge authenticated, if its kind may call this route (else 403):
    the one check at the top of a handler."""
    if CALLER not in request:  # a route the edge treats as public names no caller
        raise unauthorized("Send Authorization: Bearer <key or device token>.")
    caller = request[CALLER]
    if caller.kind not in allowed:
        raise forbidden(caller.kind)
    return caller


def forbidden(kind: CallerKind) -> Forbidden:
    return Forbidden(f"A {kind} credential may not call this.")


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail)

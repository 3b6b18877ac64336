"""Who is calling (contract §1), as the services see it: a kind and the credential used;
and the one rule of who may act on a device (``may_act``), which every device-scoped path
goes through.

A device token is ``<device ref>.<nonce>.<tag>``: the ref names the device, the nonce
makes each token new, and the tag is a MAC of both under the service's token key. The
tag lets the edge refuse a made-up token with one HMAC, before any store read, rate
bucket or body read; the stored hash of the whole token (only the hash is ever stored)
still has to match, so that a rotated or erased token is refused too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from typing import Final, Literal

import msgspec

from geofence.domain.devices import DeviceProfile, token_matches
from geofence.domain.errors import Forbidden, GeofenceError, NotFound, Unauthorized

CallerKind = Literal["admin", "sdk", "ingest", "device"]

TOKEN_KEY_CONTEXT: Final = b"geofence device token v1"
TAG_BYTES: Final = 16  # 128 bits of MAC
NONCE_BYTES: Final = 24
_TOKEN: Final = re.compile(
    r"(?P<ref>[0-9a-f]{32})\.(?P<nonce>[A-Za-z0-9_-]{32})\.(?P<tag>[A-Za-z0-9_-]{22})", re.ASCII
)


class Caller(msgspec.Struct, frozen=True):
    kind: CallerKind
    token: str

    @property
    def device_ref(self) -> str | None:
        """The ref a device token names (its tag verified at the edge; its stored hash
        still to be checked)."""
        if self.kind != "device":
            return None
        ref, _, _ = self.token.partition(".")
        return ref


def token_key(id_secret: bytes) -> bytes:
    """The key of device token tags, derived from the device-id secret."""
    return hmac.new(id_secret, TOKEN_KEY_CONTEXT, hashlib.sha256).digest()


def new_device_token(ref: str, key: bytes) -> str:
    """A fresh device token naming ``ref``, tagged with ``key``."""
    signed = f"{ref}.{secrets.token_urlsafe(NONCE_BYTES)}"
    return f"{signed}.{_tag(key, signed)}"


def verified_ref(token: str, key: bytes) -> str | None:
    """The ref a device token names if its tag is right, else None; the tag is compared
    in constant time, and anything not shaped like a token costs no MAC at all."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    signed = f"{match['ref']}.{match['nonce']}"
    if not hmac.compare_digest(match["tag"], _tag(key, signed)):  # ASCII, as matched
        return None
    return match["ref"]


def _tag(key: bytes, signed: str) -> str:
    digest = hmac.digest(key, signed.encode(), "sha256")[:TAG_BYTES]  # one-shot: every request
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# why a caller may not act on a device: its kind may not (403), the device token is not
# valid: forged, rotated, or of an erased device (401), the token is another device's (404),
# or there is no such device (404)
Why = Literal["kind", "invalid", "other-device", "no-device"]


class Refusal(msgspec.Struct, frozen=True):
    """Why ``may_act`` said no, and the kind of the caller it said it to."""

    why: Why
    kind: CallerKind

    def error(self) -> GeofenceError:
        """The answer: another device looks exactly like one that does not exist."""
        if self.why == "kind":
            return Forbidden(f"A {self.kind} credential may not call this.")
        if self.why == "invalid":
            return Unauthorized("The device token is not valid.")
        return NotFound("No such device.")


def profile_to_read(caller: Caller, ref: str | None, allowed: Collection[CallerKind]) -> str | None:
    """The device whose stored profile ``may_act`` needs: a device token's own device,
    wherever the token points (its hash is checked against it), else the device acted
    on. None: nothing to read (a kind refused outright, an id no device can have)."""
    if not kind_may(caller.kind, allowed):
        return None
    return caller.device_ref if caller.kind == "device" else ref


def kind_may(kind: CallerKind, allowed: Collection[CallerKind]) -> bool:
    """The sdk key never may act on a device (it ships inside the app), nor a kind not
    ``allowed`` here."""
    return kind != "sdk" and kind in allowed


def may_act(
    caller: Caller,
    ref: str | None,
    allowed: Collection[CallerKind],
    stored: DeviceProfile | None,
) -> DeviceProfile | Refusal:
    """The rule of contract §1: the profile of the device ``ref`` if ``caller`` may act
    on it, else why not. ``ref``: the device acted on (None: an id no device can have);
    ``stored``: the profile of ``profile_to_read(caller, ref)``, None when there is none.

    The sdk key never may (it ships inside the app), nor a kind not ``allowed``. An admin
    or ingest key, where allowed, needs only the device to exist. A device token must
    match its own device's stored hash (a forged token is refused wherever it points),
    and then reaches only that device: any other is "no such device".
    """
    if not kind_may(caller.kind, allowed):
        return Refusal("kind", caller.kind)
    if caller.kind != "device":
        return stored if stored is not None else Refusal("no-device", caller.kind)
    if stored is not None and not token_matches(caller.token, stored):
        return Refusal("invalid", caller.kind)
    if not reaches(caller, ref):
        return Refusal("other-device" if stored is not None else "invalid", caller.kind)
    return stored if stored is not None else Refusal("no-device", caller.kind)


def reaches(caller: Caller, ref: str | None) -> bool:
    """Whether ``caller`` is a device token naming the device ``ref``, the only device
    it may act on (compared in constant time; the edge asks it before the body is read)."""
    claimed = caller.device_ref
    if claimed is None or ref is None:
        return False
    return hmac.compare_digest(claimed.encode(), ref.encode())

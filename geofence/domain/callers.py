"""Who is calling (contract §1), as the services see it: a kind and the credential used.

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
from typing import Final, Literal

import msgspec

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
    if not hmac.compare_digest(match["tag"].encode(), _tag(key, signed).encode()):
        return None
    return match["ref"]


def _tag(key: bytes, signed: str) -> str:
    digest = hmac.new(key, signed.encode(), hashlib.sha256).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

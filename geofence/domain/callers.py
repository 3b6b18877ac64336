"""Who is calling (contract §1), as the services see it: a kind and the credential used.

A device token is ``<device ref>.<secret>``: the ref names the device whose stored token
hash must match. Only the hash of a token is ever stored.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec

CallerKind = Literal["admin", "sdk", "ingest", "device"]


class Caller(msgspec.Struct, frozen=True):
    kind: CallerKind
    token: str

    @property
    def device_ref(self) -> str | None:
        """The ref a device token claims (still to be checked against the stored hash)."""
        if self.kind != "device":
            return None
        ref, _, _ = self.token.partition(".")
        return ref


def new_device_token(ref: str) -> str:
    """A fresh device token naming ``ref``; only its hash is ever stored."""
    return f"{ref}.{secrets.token_urlsafe(32)}"

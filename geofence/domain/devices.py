"""Devices as the service keeps them: pseudonymous, with consent per purpose and its ledger.

The raw device id is never stored: every key and log line uses ``ref``, a keyed HMAC of it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import msgspec

Purpose = Literal["location", "offers"]
PURPOSES: tuple[Purpose, ...] = ("location", "offers")


class ConsentChange(msgspec.Struct, frozen=True, kw_only=True):
    purpose: Purpose
    granted: bool
    at: float


class DeviceProfile(msgspec.Struct, frozen=True, kw_only=True):
    ref: str
    token_hash: str
    consent: dict[str, bool]
    ledger: tuple[ConsentChange, ...] = ()
    tier: str | None = None
    segments: tuple[str, ...] = ()
    timezone: str | None = None
    push_token: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def allows(self, purpose: Purpose) -> bool:
        return self.consent.get(purpose, False)


def device_ref(device_id: str, secret: bytes) -> str:
    """The pseudonym of a device id: stable for one secret, useless without it."""
    return hmac.new(secret, device_id.encode(), hashlib.sha256).hexdigest()[:32]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, profile: DeviceProfile) -> bool:
    return hmac.compare_digest(token_hash(token), profile.token_hash)

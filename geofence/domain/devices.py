"""Devices as the service keeps them: pseudonymous, with consent per purpose and its ledger.

The raw device id is never stored: every key and log line uses ``ref``, a keyed HMAC of it.
What a device may send (``Registration``, ``ProfilePatch``) is declared here with its
limits; unknown fields are refused, so nothing the contract does not name is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zoneinfo
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from geofence.domain.errors import InvalidInput, Problem

Purpose = Literal["location", "offers"]
PURPOSES: tuple[Purpose, ...] = ("location", "offers")

MAX_DEVICE_ID_LEN = 128
# the ledger keeps the most recent changes; the current consent is always in ``consent``
LEDGER_LIMIT = 100
_DEVICE_ID = r"^[^\x00-\x1f\x7f]+$"  # no control characters

DeviceId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_DEVICE_ID_LEN, pattern=_DEVICE_ID)
]
Tier = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Segment = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Segments = Annotated[tuple[Segment, ...], msgspec.Meta(max_length=100)]
TimezoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PushToken = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


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


class Consent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Consent at registration: both purposes must be answered."""

    location: bool
    offers: bool


class ConsentPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    location: bool | UnsetType = UNSET
    offers: bool | UnsetType = UNSET


class Registration(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/devices`` (contract §4)."""

    device_id: DeviceId
    consent: Consent
    tier: Tier | None = None
    segments: Segments = ()
    timezone: TimezoneName | None = None
    push_token: PushToken | None = None


class ProfilePatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /v1/devices/{device_id}``: absent fields stay; ``null`` clears a field."""

    consent: ConsentPatch | UnsetType = UNSET
    tier: Tier | UnsetType | None = UNSET
    segments: Segments | UnsetType = UNSET
    timezone: TimezoneName | UnsetType | None = UNSET
    push_token: PushToken | UnsetType | None = UNSET


def device_ref(device_id: str, secret: bytes) -> str:
    """The pseudonym of a device id: stable for one secret, useless without it."""
    return hmac.new(secret, device_id.encode(), hashlib.sha256).hexdigest()[:32]


def valid_device_id(device_id: str) -> bool:
    """What ``DeviceId`` accepts; a path id failing this names no device."""
    return 0 < len(device_id) <= MAX_DEVICE_ID_LEN and re.match(_DEVICE_ID, device_id) is not None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, profile: DeviceProfile) -> bool:
    return hmac.compare_digest(token_hash(token), profile.token_hash)


def check_timezone(name: str | None) -> None:
    """An IANA zone name (or none): anything zoneinfo cannot load is a 422."""
    if name is None:
        return
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        problem = Problem(path="$.timezone", code="unknown-timezone", detail=f"{name!r}")
        raise InvalidInput([problem], "timezone is not an IANA zone name") from None


def new_profile(body: Registration, *, ref: str, token_hash: str, now: float) -> DeviceProfile:
    """A device as registered, its initial consent the first entries of its ledger."""
    check_timezone(body.timezone)
    consent = {"location": body.consent.location, "offers": body.consent.offers}
    return DeviceProfile(
        ref=ref,
        token_hash=token_hash,
        consent=consent,
        ledger=tuple(ConsentChange(purpose=p, granted=consent[p], at=now) for p in PURPOSES),
        tier=body.tier,
        segments=body.segments,
        timezone=body.timezone,
        push_token=body.push_token,
        created_at=now,
        updated_at=now,
    )


def apply_patch(profile: DeviceProfile, patch: ProfilePatch, now: float) -> DeviceProfile:
    """The profile after ``patch``; each consent that changes value joins the ledger."""
    changes: dict[str, object] = {
        name: getattr(patch, name)
        for name in ("tier", "segments", "timezone", "push_token")
        if getattr(patch, name) is not UNSET
    }
    if "timezone" in changes:
        check_timezone(patch.timezone if isinstance(patch.timezone, str) else None)
    if not isinstance(patch.consent, UnsetType):
        changes.update(_consent_changes(profile, patch.consent, now))
    return msgspec.structs.replace(profile, **changes, updated_at=now)


def _consent_changes(profile: DeviceProfile, patch: ConsentPatch, now: float) -> dict[str, object]:
    consent = dict(profile.consent)
    ledger = list(profile.ledger)
    for purpose in PURPOSES:
        granted = getattr(patch, purpose)
        if isinstance(granted, bool) and granted != profile.allows(purpose):
            consent[purpose] = granted
            ledger.append(ConsentChange(purpose=purpose, granted=granted, at=now))
    return {"consent": consent, "ledger": tuple(ledger[-LEDGER_LIMIT:])}


def withdrew(before: DeviceProfile, after: DeviceProfile, purpose: Purpose) -> bool:
    return before.allows(purpose) and not after.allows(purpose)

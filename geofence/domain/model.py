"""The domain's values: fences, pings, visits, events and the rules that drive them.

Pure data: no I/O, no clocks. Time is always a float of epoch seconds passed in by the
caller (the pings' own ``ts``). Structs are frozen so state changes are new values, and
msgspec can encode them compactly for the state stores.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

EventType = Literal["entry", "exit"]
ExitReason = Literal["left", "timeout", "store_removed"]
PingStatus = Literal["accepted", "flagged", "ignored"]


class Fence(msgspec.Struct, frozen=True, kw_only=True):
    """A store's fence as validated from GeoJSON (RFC 7946, WGS 84, lng/lat order).

    ``geometry`` is the normalised GeoJSON geometry (Polygon, MultiPolygon, or Point with
    ``radius_m``). ``properties`` keeps everything the marketer uploaded so the catalogue
    reads back as it was written.
    """

    id: str
    geometry: dict[str, Any]
    name: str | None = None
    tags: tuple[str, ...] = ()
    timezone: str = "Europe/Helsinki"
    margin_m: float = 0.0
    dwell_s: float | None = None
    radius_m: float | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def revision(self) -> str:
        """Changes whenever the area that decides inside/outside changes."""
        shape = msgspec.json.encode([self.geometry, self.radius_m, self.margin_m])
        return hashlib.blake2b(shape, digest_size=8).hexdigest()

    def to_feature(self) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": self.geometry,
            "properties": self.properties,
        }


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """One location fix of one device. ``ts`` is epoch seconds from the device."""

    lat: float
    lng: float
    accuracy_m: float
    ts: float
    mocked: bool = False


class Fix(msgspec.Struct, frozen=True, kw_only=True):
    """A remembered position, used for the jump check."""

    lat: float
    lng: float
    ts: float


class Visit(msgspec.Struct, frozen=True, kw_only=True):
    """A device's visit to one store.

    Pending until dwell is reached; then confirmed. ``suppressed`` marks a confirmed
    visit whose entry fell inside the entry cooldown: it emits neither entry nor exit.
    ``departing_since`` is the first outside ping of a departure not yet confirmed.
    """

    store_id: str
    fence_rev: str
    arrived_at: float
    last_inside_at: float
    confirmed: bool = False
    suppressed: bool = False
    departing_since: float | None = None


class DeviceState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the visit engine remembers about one device."""

    last_ts: float | None = None  # last ping that was not ignored (stale check)
    last_fix: Fix | None = None  # last ping accepted or flagged `jump` (jump check)
    last_accepted_ts: float | None = None  # visit timeout
    visits: dict[str, Visit] = msgspec.field(default_factory=dict)
    last_entry_at: dict[str, float] = msgspec.field(default_factory=dict)  # cooldown
    flags: dict[str, int] = msgspec.field(default_factory=dict)  # flagged pings by reason
    suppressed_entries: int = 0


class VisitEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An entry or exit, as the API returns it (contract §5)."""

    type: EventType
    store_id: str
    at: float
    arrived_at: float | None = None
    left_at: float | None = None
    dwell_s: float | None = None
    reason: ExitReason | None = None


class ScreeningRules(msgspec.Struct, frozen=True, kw_only=True):
    max_accuracy_m: float = 100.0
    too_old_s: float = 86_400.0
    future_s: float = 300.0
    jump_speed_mps: float = 55.0
    jump_speed_after_gap_mps: float = 300.0
    jump_gap_s: float = 1_800.0


class VisitRules(msgspec.Struct, frozen=True, kw_only=True):
    dwell_s: float = 120.0
    max_gap_s: float = 900.0
    exit_margin_m: float = 30.0
    exit_s: float = 60.0
    visit_timeout_s: float = 14_400.0
    entry_cooldown_s: float = 21_600.0


class Rules(msgspec.Struct, frozen=True, kw_only=True):
    """Every rule a device's pings go through: screening, then the visits."""

    screening: ScreeningRules = ScreeningRules()
    visits: VisitRules = VisitRules()

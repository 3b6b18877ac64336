"""Screening: which pings may move a device's visits (contract §5).

Rules run in the contract's order and the first that applies gives the reason:
``stale``, ``too_old`` and ``future`` leave the ping ``ignored`` (no state change);
``inaccurate``, ``mocked`` and ``jump`` leave it ``flagged`` (counted per device, no
visit change). Everything else is ``accepted``.

The jump check measures speed from ``DeviceState.last_fix``, the previous ping that was
accepted *or* flagged ``jump``. Remembering the flagged position too is what bounds the
cost of a glitch: the glitch and the ping after it are flagged, the next one is accepted;
and a real relocation is accepted from its second ping on.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from geofence.domain.model import DeviceState, Fix, Ping, PingStatus, ScreeningRules

ScreeningReason = Literal["stale", "too_old", "future", "inaccurate", "mocked", "jump"]

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius


class Screening(msgspec.Struct, frozen=True):
    """The verdict on one ping: its status and the first rule that gave it."""

    status: PingStatus
    reason: ScreeningReason | None = None


ACCEPTED = Screening("accepted")


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points (spherical Earth)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lng2 - lng1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def screen(ping: Ping, state: DeviceState, now: float, rules: ScreeningRules) -> Screening:
    """Screen ``ping`` against the device's ``state`` at time ``now`` (epoch seconds)."""
    ignored = _ignored_reason(ping, state.last_ts, now, rules)
    if ignored is not None:
        return Screening("ignored", ignored)
    flagged = _flagged_reason(ping, state.last_fix, rules)
    if flagged is not None:
        return Screening("flagged", flagged)
    return ACCEPTED


def _ignored_reason(
    ping: Ping, last_ts: float | None, now: float, rules: ScreeningRules
) -> ScreeningReason | None:
    if last_ts is not None and ping.ts <= last_ts:
        return "stale"
    if ping.ts < now - rules.too_old_s:
        return "too_old"
    if ping.ts > now + rules.future_s:
        return "future"
    return None


def _flagged_reason(
    ping: Ping, last_fix: Fix | None, rules: ScreeningRules
) -> ScreeningReason | None:
    # Written as a range so that a NaN accuracy is inaccurate too.
    if not 0.0 < ping.accuracy_m <= rules.max_accuracy_m:
        return "inaccurate"
    if ping.mocked:
        return "mocked"
    if last_fix is not None and is_jump(ping, last_fix, rules):
        return "jump"
    return None


def is_jump(ping: Ping, last_fix: Fix, rules: ScreeningRules) -> bool:
    """Whether reaching ``ping`` from ``last_fix`` needs an implausible speed."""
    distance_m = haversine_m(last_fix.lat, last_fix.lng, ping.lat, ping.lng)
    elapsed_s = ping.ts - last_fix.ts
    if elapsed_s <= 0:
        # Unreachable through record(), which never keeps a fix newer than last_ts.
        return distance_m > 0
    if elapsed_s >= rules.jump_gap_s:
        return distance_m / elapsed_s > rules.jump_speed_after_gap_mps
    return distance_m / elapsed_s > rules.jump_speed_mps


def record(state: DeviceState, ping: Ping, screening: Screening) -> DeviceState:
    """The device state after ``ping`` was screened as ``screening``.

    Not ignored: ``last_ts``. Accepted: ``last_accepted_ts``. Accepted or flagged ``jump``:
    ``last_fix``. Flagged: one more in ``flags[reason]``. Visits are not touched here.
    """
    status, t = screening.status, ping.ts
    if status == "accepted":
        return msgspec.structs.replace(state, last_ts=t, last_accepted_ts=t, last_fix=fix_of(ping))
    if status == "ignored":
        return state
    flags = dict(state.flags)
    if screening.reason is not None:
        flags[screening.reason] = flags.get(screening.reason, 0) + 1
    if screening.reason == "jump":
        return msgspec.structs.replace(state, last_ts=t, last_fix=fix_of(ping), flags=flags)
    return msgspec.structs.replace(state, last_ts=t, flags=flags)


def fix_of(ping: Ping) -> Fix:
    """Where and when the ping was, as the jump check remembers it."""
    return Fix(lat=ping.lat, lng=ping.lng, ts=ping.ts)

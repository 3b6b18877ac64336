"""The visit rules moved over many pings at once: fast twins of geofence.domain.visits."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from geofence.domain.model import DeviceState, Ping, VisitRules
from geofence.domain.screening import Screening, fix_of
from geofence.domain.visits import recent_entries


def passed_by(
    state: DeviceState,
    pings: Sequence[Ping],
    screenings: Sequence[Screening],
    rules: VisitRules,
) -> DeviceState:
    """Twin of geofence.domain.visits.step, ping after ping, for a device that has no
    open visit and none of whose accepted pings is inside a fence: no visit starts, so
    only what ``record`` keeps moves, and the cooldowns run out. ``screenings``: each
    ping's verdict.

    The state in one step, not a new one per ping: most pings of a batch pass by.
    """
    last_ts = state.last_ts
    accepted: Ping | None = None  # the last accepted ping
    fixed: Ping | None = None  # the last ping that moves the fix
    flags: dict[str, int] | None = None
    for ping, screening in zip(pings, screenings, strict=True):
        status = screening.status
        if status == "ignored":
            continue
        last_ts = ping.ts
        if status == "accepted":
            accepted = fixed = ping
        elif screening.reason == "jump":
            fixed = ping
        if status == "flagged" and screening.reason is not None:
            flags = dict(state.flags) if flags is None else flags
            flags[screening.reason] = flags.get(screening.reason, 0) + 1
    # pings come in ts order, so pruning the cooldowns once, at the last accepted ping,
    # keeps what pruning them at each one would
    if accepted is None:
        accepted_ts, entries = state.last_accepted_ts, state.last_entry_at
    else:
        accepted_ts = accepted.ts
        entries = recent_entries(state.last_entry_at, accepted_ts, rules)
    fix = state.last_fix if fixed is None else fix_of(fixed)
    return msgspec.structs.replace(
        state,
        last_ts=last_ts,
        last_accepted_ts=accepted_ts,
        last_fix=fix,
        flags=state.flags if flags is None else flags,
        last_entry_at=entries,
    )

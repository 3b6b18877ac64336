"""The visit rules (contract §5) as pure functions of a device's state and one ping.

Time is only the pings' ``ts``. Every "X elapsed" rule fires when exactly X has elapsed:
dwell (``t >= t0 + dwell``), exit debounce (``t >= t1 + exit_s``), max gap
(``t >= last inside + max_gap_s`` drops a pending visit), visit timeout
(``t >= last accepted + visit_timeout_s``) and cooldown (an entry at
``t < previous entry + entry_cooldown_s`` is suppressed; at exactly the cooldown it is
emitted). A zero dwell or exit debounce lets the starting ping confirm at once.

Events of one ping come exits first, then entries, each group by ``store_id``; a store
gives at most one of each per ping (a closed visit's store may start a new visit on the
same ping, so its exit comes before its entry).

Flow for one ping: ``step`` screens it; an accepted ping goes through
``advance_device`` with the state *before* ``screening.record``; then ``record`` updates
``last_ts``, ``last_fix``, ``last_accepted_ts`` and the flag counts. A device's pings:
``step_each``, ``step`` one after the other (the reference of the service's core entry,
``geofence.engine.device.outcome_of``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import msgspec

from geofence.domain.model import (
    DeviceState,
    ExitReason,
    Ping,
    Rules,
    ScreeningRules,
    Visit,
    VisitEvent,
    VisitRules,
)
from geofence.domain.screening import Screening, record, screen

Zone = Literal["inside", "band", "outside"]


class StoreView(msgspec.Struct, frozen=True, kw_only=True):
    """What the visit rules need to know of a store in the current catalogue."""

    store_id: str
    fence_rev: str
    dwell_s: float | None = None


def zone(distance_m: float, accuracy_m: float, rules: VisitRules) -> Zone:
    """Inside the grown fence (boundary included), outside it, or in the hysteresis band."""
    if distance_m <= 0.0:
        return "inside"
    if distance_m > max(rules.exit_margin_m, accuracy_m):
        return "outside"
    return "band"


def advance_visit(
    visit: Visit | None,
    ping: Ping,
    store: StoreView,
    distance_m: float,
    last_entry_at: float | None,
    rules: VisitRules,
) -> tuple[Visit | None, list[VisitEvent]]:
    """One accepted ping for one (device, store) pair.

    ``visit`` must belong to ``store``'s current revision (``advance_device`` closes the
    others first). ``last_entry_at`` is the device's previous emitted entry to the store.
    """
    where = zone(distance_m, ping.accuracy_m, rules)
    t = ping.ts
    if visit is not None and not visit.confirmed and t >= visit.last_inside_at + rules.max_gap_s:
        visit = None
    if visit is None:
        if where != "inside":
            return None, []
        started = Visit(
            store_id=store.store_id, fence_rev=store.fence_rev, arrived_at=t, last_inside_at=t
        )
        return _confirm_if_dwelt(started, t, store, last_entry_at, rules)
    if visit.confirmed:
        return _advance_confirmed(visit, t, where, rules)
    if where == "outside":
        return None, []
    if where == "band":
        return visit, []
    inside = msgspec.structs.replace(visit, last_inside_at=t)
    return _confirm_if_dwelt(inside, t, store, last_entry_at, rules)


def _confirm_if_dwelt(
    visit: Visit, t: float, store: StoreView, last_entry_at: float | None, rules: VisitRules
) -> tuple[Visit, list[VisitEvent]]:
    dwell_s = rules.dwell_s if store.dwell_s is None else store.dwell_s
    if t < visit.arrived_at + dwell_s:
        return visit, []
    if last_entry_at is not None and t < last_entry_at + rules.entry_cooldown_s:
        return msgspec.structs.replace(visit, confirmed=True, suppressed=True), []
    entry = VisitEvent(type="entry", store_id=visit.store_id, at=t, arrived_at=visit.arrived_at)
    return msgspec.structs.replace(visit, confirmed=True), [entry]


def _advance_confirmed(
    visit: Visit, t: float, where: Zone, rules: VisitRules
) -> tuple[Visit | None, list[VisitEvent]]:
    if where == "inside":
        return msgspec.structs.replace(visit, last_inside_at=t, departing_since=None), []
    if where == "band":
        return visit, []
    left_at = t if visit.departing_since is None else visit.departing_since
    if t < left_at + rules.exit_s:
        return msgspec.structs.replace(visit, departing_since=left_at), []
    return None, _exit(visit, t, left_at, "left")


def _exit(visit: Visit, at: float, left_at: float, reason: ExitReason) -> list[VisitEvent]:
    """The exit event closing ``visit``: none for a pending or suppressed visit."""
    if not visit.confirmed or visit.suppressed:
        return []
    dwell_s = left_at - visit.arrived_at
    return [
        VisitEvent(
            type="exit",
            store_id=visit.store_id,
            at=at,
            left_at=left_at,
            dwell_s=dwell_s,
            reason=reason,
        )
    ]


def _close(visit: Visit, at: float, reason: ExitReason) -> list[VisitEvent]:
    """Close a visit from outside its own pings: left at its last inside ping."""
    return _exit(visit, at, visit.last_inside_at, reason)


def _still_open(
    state: DeviceState, t: float, stores: Mapping[str, StoreView], rules: VisitRules
) -> tuple[dict[str, Visit], list[VisitEvent]]:
    """The device's visits still open at ``t``, and the exits of those it closes: every
    visit on a visit timeout, else each one whose store left the catalogue or changed."""
    last = state.last_accepted_ts
    if last is not None and t >= last + rules.visit_timeout_s:
        return {}, [
            event for visit in state.visits.values() for event in _close(visit, t, "timeout")
        ]
    kept: dict[str, Visit] = {}
    events: list[VisitEvent] = []
    for store_id, visit in state.visits.items():
        store = stores.get(store_id)
        if store is not None and store.fence_rev == visit.fence_rev:
            kept[store_id] = visit
        else:
            events.extend(_close(visit, t, "store_removed"))
    return kept, events


def advance_device(
    state: DeviceState,
    ping: Ping,
    stores: Mapping[str, StoreView],
    distances: Mapping[str, float],
    rules: VisitRules,
) -> tuple[DeviceState, list[VisitEvent]]:
    """Advance every visit of a device by one *accepted* ping.

    ``stores`` is the current catalogue view of every store relevant to the device (those
    near the ping and those of its open visits that still exist); ``distances`` the
    metres from the ping to each one's grown fence (a store missing there counts as far
    away). ``state`` is the state before ``screening.record`` for this ping: its
    ``last_accepted_ts`` decides the visit timeout. Screening fields are left alone.
    """
    t = ping.ts
    if not stores and not state.visits:  # the common case, far from every store
        recent = recent_entries(state.last_entry_at, t, rules)
        if recent is state.last_entry_at:
            return state, []
        return msgspec.structs.replace(state, last_entry_at=recent), []
    visits, events = _still_open(state, t, stores, rules)
    entries = state.last_entry_at
    suppressed = state.suppressed_entries
    for store_id in sorted(stores) if len(stores) > 1 else stores:
        before = visits.pop(store_id, None)
        after, store_events = advance_visit(
            before,
            ping,
            stores[store_id],
            distances.get(store_id, math.inf),
            entries.get(store_id),
            rules,
        )
        if after is not None:
            visits[store_id] = after
            suppressed += _newly_suppressed(before, after)
        if store_events:
            entries = _with_entries(entries, store_events)
            events.extend(store_events)
    new_state = msgspec.structs.replace(
        state,
        visits=visits,
        last_entry_at=recent_entries(entries, t, rules),
        suppressed_entries=suppressed,
    )
    if len(events) > 1:
        events.sort(key=_event_order)
    return new_state, events


def _event_order(event: VisitEvent) -> tuple[bool, str]:
    """Exits first, then entries, each by store id."""
    return event.type != "exit", event.store_id


def _with_entries(entries: dict[str, float], events: list[VisitEvent]) -> dict[str, float]:
    """``entries`` with the times of the entry ``events`` in (a new dict if they add any)."""
    emitted = {e.store_id: e.at for e in events if e.type == "entry"}
    return entries | emitted if emitted else entries


def _newly_suppressed(before: Visit | None, after: Visit) -> int:
    was_confirmed = before is not None and before.confirmed
    return int(after.suppressed and not was_confirmed)


def recent_entries(entries: dict[str, float], t: float, rules: VisitRules) -> dict[str, float]:
    """Entries that can still suppress one at ``t`` or later (pings only move forward):
    ``entries`` itself when it keeps them all."""
    cooldown_s = rules.entry_cooldown_s
    for at in entries.values():
        if t >= at + cooldown_s:
            return {store_id: at for store_id, at in entries.items() if t < at + cooldown_s}
    return entries


def step(
    state: DeviceState,
    ping: Ping,
    now: float,
    stores: Mapping[str, StoreView],
    distances: Mapping[str, float],
    screening_rules: ScreeningRules,
    visit_rules: VisitRules,
    screening: Screening | None = None,
) -> tuple[DeviceState, Screening, list[VisitEvent]]:
    """Screen one ping; an accepted one advances the visits; then record the screening.

    Flagged and ignored pings change no visit state. ``screening``, when given, is
    ``screen(ping, state, now, screening_rules)`` computed by the caller already.
    """
    if screening is None:
        screening = screen(ping, state, now, screening_rules)
    events: list[VisitEvent] = []
    if screening.status == "accepted":
        state, events = advance_device(state, ping, stores, distances, visit_rules)
    return record(state, ping, screening), screening, events


def step_each(
    state: DeviceState,
    pings: Sequence[Ping],
    now: float,
    stores: Mapping[str, StoreView],
    distances: Callable[[Ping], Mapping[str, float]],
    rules: Rules,
) -> tuple[DeviceState, list[tuple[Screening, list[VisitEvent]]]]:
    """A device's pings, in ts order, through :func:`step` one after the other: its state
    after them, and each ping's verdict and events.

    ``stores``: every store of the catalogue; ``distances(ping)``: the metres from the
    ping to each one's grown fence (``geofence.domain.geometry.lookup``).
    """
    steps = []
    for ping in pings:
        state, verdict, events = step(
            state, ping, now, stores, distances(ping), rules.screening, rules.visits
        )
        steps.append((verdict, events))
    return state, steps

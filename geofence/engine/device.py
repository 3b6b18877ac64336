"""One device's pings through the rules: the core entry every way in goes through.

:func:`outcome_of` is the twin of :func:`geofence.domain.visits.step_each`: the single
ping, the batch (``PingService.handle_many``) and ``geofence replay`` all reach the rules
through it. It is fast where the reference is plain: the fences come from the index
(only those that hold the ping and those of the device's open visits), the lookups and
verdicts may be done beforehand for many devices at once, and a device passing by has
its state moved in one step (:func:`geofence.engine.visits.passed_by`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from geofence.domain.model import DeviceState, Ping, Rules, VisitEvent
from geofence.domain.offers import EntryDecision
from geofence.domain.screening import Screening, screen
from geofence.domain.visits import StoreView, step
from geofence.engine.index import DISTANCES_IN_TURN_BELOW, FenceIndex, FloatArray
from geofence.engine.visits import passed_by

Nears = Sequence[Mapping[str, float]]  # of each ping of a group: see ``relevant_stores``
Verdicts = Sequence[Screening]  # the screening of each ping of a group


class PingResult(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    reason: str | None
    events: list[VisitEvent]
    notifications: list[dict[str, object]] = msgspec.field(default_factory=list)
    decisions: list[EntryDecision] | UnsetType = UNSET  # with ?explain=true only


class _Passed(dict[Screening, PingResult]):
    """The result of a ping that makes no event, by its verdict: made the first time it
    is asked for, then shared (a result is never changed once made: the offers are hung
    on new ones). The verdicts are the few statuses and reasons of the screening."""

    def __missing__(self, verdict: Screening) -> PingResult:
        made = self[verdict] = PingResult(status=verdict.status, reason=verdict.reason, events=[])
        return made


PASSED: Final = _Passed()


def _result(verdict: Screening, events: list[VisitEvent]) -> PingResult:
    """A ping's result: a shared one when it makes no event."""
    if events:
        return PingResult(status=verdict.status, reason=verdict.reason, events=events)
    return PASSED[verdict]


class Outcome(msgspec.Struct, frozen=True):
    state: DeviceState
    results: list[PingResult]


class StoreViews:
    """What the visit rules see of the stores of one fence index, each made once."""

    __slots__ = ("_made", "index")

    def __init__(self, index: FenceIndex) -> None:
        self.index = index
        self._made: dict[str, StoreView] = {}

    def of(self, store_id: str) -> StoreView:
        """The view of one store of the index."""
        view = self._made.get(store_id)
        if view is None:
            fence = self.index.fence(store_id)
            view = StoreView(
                store_id=store_id, fence_rev=self.index.revision(store_id), dwell_s=fence.dwell_s
            )
            self._made[store_id] = view
        return view


def outcome_of(
    state: DeviceState,
    pings: Sequence[Ping],
    lookup: StoreViews,
    now: float,
    rules: Rules,
    *,
    nears: Nears | None = None,
    verdicts: Verdicts | None = None,
) -> Outcome:
    """Every ping (in ts order) through screening and the visit rules, from ``state``.

    Twin of geofence.domain.visits.step_each. ``lookup``: the stores of the fence index
    in use. ``nears``, when given, holds the distances of each ping (``relevant_stores``);
    ``verdicts`` the screening of each ping from ``state`` on, done beforehand.
    """
    if nears is not None and verdicts is not None and passing_by(state, nears, verdicts):
        results = [PASSED[v] for v in verdicts]
        return Outcome(passed_by(state, pings, verdicts, rules.visits), results)
    results = []
    for i, ping in enumerate(pings):
        near = None if nears is None else nears[i]
        verdict = None if verdicts is None else verdicts[i]
        state, screening, events = _step(lookup, state, ping, now, rules, near, verdict)
        results.append(_result(screening, events))
    return Outcome(state, results)


def _step(
    lookup: StoreViews,
    state: DeviceState,
    ping: Ping,
    now: float,
    rules: Rules,
    near: Mapping[str, float] | None,
    screening: Screening | None,
) -> tuple[DeviceState, Screening, list[VisitEvent]]:
    stores: dict[str, StoreView] = {}
    distances: dict[str, float] = {}
    if screening is None:
        screening = screen(ping, state, now, rules.screening)
    if screening.status == "accepted" and (near or state.visits or near is None):
        stores, distances = relevant_stores(lookup, state, ping, near)
    return step(state, ping, now, stores, distances, rules.screening, rules.visits, screening)


def passing_by(state: DeviceState, nears: Nears, verdicts: Verdicts) -> bool:
    """No open visit, and no accepted ping inside a fence: no visit can start or move."""
    if state.visits:
        return False
    return not any(
        v.status == "accepted" and any(m <= 0.0 for m in near.values())
        for near, v in zip(nears, verdicts, strict=True)
        if near
    )


def relevant_stores(
    views: StoreViews, state: DeviceState, ping: Ping, near: Mapping[str, float] | None = None
) -> tuple[dict[str, StoreView], dict[str, float]]:
    """The fences the ping is inside plus the fences of the device's open visits.

    A fence near the ping but not holding it, with no open visit, is left out: only a
    ping inside a fence starts a visit, so the visit rules would leave it as it is. Open
    visits are looked up by id, not by position, so a device that jumped far away still
    gets its exits; a visit whose store left the catalogue is simply not listed, which
    the visit rules read as "store removed". ``near``: the ping's distances to at least
    every fence that may hold it (``index.near``), when the caller looked them up already.
    """
    index, visits = views.index, state.visits
    found = index.near(ping.lat, ping.lng) if near is None else near
    distances = {
        store_id: metres
        for store_id, metres in found.items()
        if metres <= 0.0 or store_id in visits
    }
    for store_id in visits:
        if store_id not in distances and store_id in index:
            distances[store_id] = index.distance_m(store_id, ping.lat, ping.lng)
    return {store_id: views.of(store_id) for store_id in distances}, distances


def nears_of(
    index: FenceIndex,
    lats: FloatArray,
    lngs: FloatArray,
    spans: Sequence[tuple[int, int]],
    states: Sequence[DeviceState],
) -> list[list[dict[str, float]]]:
    """The ``nears`` of many devices' groups of pings at once, for :func:`outcome_of`.

    Twin of ``index.near`` per ping (as ``relevant_stores`` asks it): the distance of
    every ping to each fence that may hold it and to every store at which it may find a
    visit open (``_may_visit``), in two vectorised calls. ``spans``: each group's
    [start, end) rows of ``lats`` and ``lngs``; ``states``: each group's device state. (A
    fence only near a ping is left out: without an open visit it is no concern of the
    rules.)
    """
    found = index.near_many(lats, lngs, band=False)
    at: list[int] = []
    stores: list[str] = []
    for (start, end), state in zip(spans, states, strict=True):
        for store_id, first in _may_visit(state, found[start:end], index).items():
            missing = [row for row in range(start + first, end) if store_id not in found[row]]
            at.extend(missing)
            stores.extend([store_id] * len(missing))
    if len(at) >= DISTANCES_IN_TURN_BELOW:
        far = index.distances_m(stores, lats[at], lngs[at]).tolist()
        for row, store_id, metres in zip(at, stores, far, strict=True):
            found[row][store_id] = metres
    else:  # a few (one a ping of a single ping's open visit): no arrays made and undone
        for row, store_id in zip(at, stores, strict=True):
            found[row][store_id] = index.distance_m(store_id, lats.item(row), lngs.item(row))
    return [found[start:end] for start, end in spans]


def _may_visit(state: DeviceState, nears: Nears, index: FenceIndex) -> dict[str, int]:
    """The stores at which a group's pings may find a visit of their device open, each
    with the first of them that may: those of its open visits still in the catalogue from
    its first ping, and each store holding one of its pings from that ping (only a ping
    inside a fence starts a visit). Empty for a group that is passing by."""
    stores = dict.fromkeys((store_id for store_id in state.visits if store_id in index), 0)
    for i, near in enumerate(nears):
        for store_id, metres in near.items():
            if metres <= 0.0:
                stores.setdefault(store_id, i)
    return stores

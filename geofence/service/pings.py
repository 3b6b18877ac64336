"""Pings in, visit events out: screen -> candidate fences -> visit rules -> state (contract §5).

A device's state changes by compare-and-set: load it with its version, compute the new
state with the pure rules, and write it only if nobody wrote in between; otherwise start
over from the fresh state. So two workers handling pings of one device at once never emit
an event twice or lose one: only the write that wins has its events returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from geofence.config import Settings
from geofence.domain.errors import Unavailable
from geofence.domain.geometry import FenceIndex
from geofence.domain.model import DeviceState, Ping, VisitEvent
from geofence.domain.screening import Screening, screen
from geofence.domain.visits import StoreView, step
from geofence.metrics import Metrics
from geofence.ports import StateStore
from geofence.service.catalogue import CatalogueService

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


class PingResult(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    reason: str | None
    events: list[VisitEvent]
    notifications: list[dict[str, object]] = msgspec.field(default_factory=list)


class Outcome(msgspec.Struct, frozen=True):
    state: DeviceState
    results: list[PingResult]


class PingService:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        catalogue: CatalogueService,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalogue = catalogue
        self.metrics = metrics
        self.clock = clock

    async def handle(
        self, ref: str, pings: Sequence[Ping], *, now: float | None = None
    ) -> list[PingResult]:
        """Apply one device's pings in ts order; results come back in the order given."""
        order = sorted(range(len(pings)), key=lambda i: pings[i].ts)
        ordered = [pings[i] for i in order]
        when = self.clock() if now is None else now
        outcome = await self._apply(ref, ordered, when)
        results: list[PingResult | None] = [None] * len(pings)
        for position, result in zip(order, outcome.results, strict=True):
            results[position] = result
        self._count(ref, outcome.results)
        return [r for r in results if r is not None]

    async def _apply(self, ref: str, pings: Sequence[Ping], now: float) -> Outcome:
        for _ in range(MAX_ATTEMPTS):
            stored = await self.store.load_state(ref)
            outcome = self.advance(stored.state, pings, now)
            if outcome.state == stored.state:
                return outcome  # nothing to write: ignored pings only
            if await self.store.save_state(ref, outcome.state, stored.version):
                return outcome
            self.metrics.state_conflicts.inc()
        raise Unavailable("the device's state is changing too fast; retry")

    def advance(self, state: DeviceState, pings: Sequence[Ping], now: float) -> Outcome:
        """The pure part: every ping through screening and the visit rules."""
        index = self.catalogue.index
        results: list[PingResult] = []
        for ping in pings:
            state, screening, events = self._step(index, state, ping, now)
            results.append(
                PingResult(status=screening.status, reason=screening.reason, events=events)
            )
        return Outcome(state, results)

    def _step(
        self, index: FenceIndex, state: DeviceState, ping: Ping, now: float
    ) -> tuple[DeviceState, Screening, list[VisitEvent]]:
        s = self.settings
        stores: dict[str, StoreView] = {}
        distances: dict[str, float] = {}
        if screen(ping, state, now, s.screening_rules).status == "accepted":
            stores, distances = relevant_stores(index, state, ping)
        return step(state, ping, now, stores, distances, s.screening_rules, s.visit_rules)

    def _count(self, ref: str, results: Sequence[PingResult]) -> None:
        for result in results:
            self.metrics.pings.labels(result.status, result.reason or "").inc()
            for event in result.events:
                self.metrics.events.labels(event.type, event.reason or "").inc()
                logger.info(
                    "visit event type=%s store=%s device=%s", event.type, event.store_id, ref
                )


def relevant_stores(
    index: FenceIndex, state: DeviceState, ping: Ping
) -> tuple[dict[str, StoreView], dict[str, float]]:
    """Fences near the new position plus the fences of the device's open visits.

    Open visits are looked up by id, not by position, so a device that jumped far away
    still gets its exits; a visit whose store left the catalogue is simply not listed,
    which the visit rules read as "store removed".
    """
    distances = dict(index.near(ping.lat, ping.lng))
    for store_id in state.visits:
        if store_id not in distances and store_id in index:
            distances[store_id] = index.distance_m(store_id, ping.lat, ping.lng)
    stores = {store_id: store_view(index, store_id) for store_id in distances}
    return stores, distances


def store_view(index: FenceIndex, store_id: str) -> StoreView:
    dwell_s = index.fence(store_id).dwell_s
    return StoreView(store_id=store_id, fence_rev=index.revision(store_id), dwell_s=dwell_s)

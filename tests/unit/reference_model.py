"""A small reference model of contract §5, to compare the visit engine against.

Written straight from the contract's text for one device, with plain dicts and sets and
nothing shared with ``geofence.domain.visits`` or ``geofence.domain.screening``. It sees
the whole catalogue on every ping (the engine only sees the stores relevant to the ping)
and drops a pending visit over the max gap only when the next inside ping comes (the
engine drops it on any ping): the events must not tell the difference.

Readings of the contract shared with the engine: an "X elapsed" rule fires when exactly
X has elapsed; a zero dwell or exit debounce confirms on the starting ping; timeout and
store-removed exits happen at the closing ping's ts; events come exits first, then
entries, each by store id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geofence.domain.model import ScreeningRules, VisitRules

RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class RefStore:
    rev: str
    dwell_s: float | None = None


@dataclass(frozen=True)
class RefPing:
    lat: float
    lng: float
    accuracy_m: float
    ts: float
    mocked: bool = False


def great_circle_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    a = math.sin(math.radians(lat2 - lat1) / 2) ** 2
    b = math.sin(math.radians(lng2 - lng1) / 2) ** 2
    h = a + math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * b
    return 2 * RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass
class ReferenceDevice:
    screening: ScreeningRules
    rules: VisitRules
    last_not_ignored: float | None = None
    fix: tuple[float, float, float] | None = None  # lat, lng, ts
    last_accepted: float | None = None
    phase: dict[str, str] = field(default_factory=dict)  # "pending" | "confirmed"
    started: dict[str, float] = field(default_factory=dict)
    last_in: dict[str, float] = field(default_factory=dict)
    leaving: dict[str, float] = field(default_factory=dict)
    muted: set[str] = field(default_factory=set)
    rev: dict[str, str] = field(default_factory=dict)
    emitted_entry: dict[str, float] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0

    def feed(
        self,
        ping: RefPing,
        now: float,
        catalogue: Mapping[str, RefStore],
        distance: Mapping[str, float],
    ) -> tuple[str, str | None, list[dict[str, Any]]]:
        status, reason = self.judge(ping, now)
        events: list[dict[str, Any]] = []
        if status == "accepted":
            events = self.move(ping, catalogue, distance)
            self.last_accepted = ping.ts
        if status != "ignored":
            self.last_not_ignored = ping.ts
        if status == "accepted" or reason == "jump":
            self.fix = (ping.lat, ping.lng, ping.ts)
        if status == "flagged" and reason is not None:
            self.flagged[reason] = self.flagged.get(reason, 0) + 1
        return status, reason, events

    # -- screening

    def judge(  # noqa: PLR0911 - one return per rule, in the contract's order
        self, ping: RefPing, now: float
    ) -> tuple[str, str | None]:
        s = self.screening
        if self.last_not_ignored is not None and ping.ts <= self.last_not_ignored:
            return "ignored", "stale"
        if ping.ts < now - s.too_old_s:
            return "ignored", "too_old"
        if ping.ts > now + s.future_s:
            return "ignored", "future"
        if not ping.accuracy_m > 0 or not ping.accuracy_m <= s.max_accuracy_m:
            return "flagged", "inaccurate"
        if ping.mocked:
            return "flagged", "mocked"
        if self.fix is not None:
            lat, lng, ts = self.fix
            speed = great_circle_m(lat, lng, ping.lat, ping.lng) / (ping.ts - ts)
            limit = s.jump_speed_mps
            if ping.ts - ts >= s.jump_gap_s:
                limit = s.jump_speed_after_gap_mps
            if speed > limit:
                return "flagged", "jump"
        return "accepted", None

    # -- visits

    def move(
        self, ping: RefPing, catalogue: Mapping[str, RefStore], distance: Mapping[str, float]
    ) -> list[dict[str, Any]]:
        t = ping.ts
        exits: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        if self.last_accepted is not None and t >= self.last_accepted + self.rules.visit_timeout_s:
            for store_id in list(self.phase):
                self.close(store_id, t, "timeout", exits)
        for store_id in list(self.phase):
            store = catalogue.get(store_id)
            if store is None or store.rev != self.rev[store_id]:
                self.close(store_id, t, "store_removed", exits)
        for store_id, store in catalogue.items():
            where = self.where(distance[store_id], ping.accuracy_m)
            self.one_store(store_id, store, t, where, exits, entries)
        exits.sort(key=lambda e: str(e["store_id"]))
        entries.sort(key=lambda e: str(e["store_id"]))
        return exits + entries

    def where(self, d: float, accuracy_m: float) -> str:
        if d == 0:
            return "inside"
        if d > self.rules.exit_margin_m and d > accuracy_m:
            return "outside"
        return "band"

    def one_store(
        self,
        store_id: str,
        store: RefStore,
        t: float,
        where: str,
        exits: list[dict[str, Any]],
        entries: list[dict[str, Any]],
    ) -> None:
        phase = self.phase.get(store_id)
        if phase is None and where == "inside":
            self.begin(store_id, store, t)
            self.maybe_confirm(store_id, store, t, entries)
        elif phase == "pending":
            self.pending(store_id, store, t, where, entries)
        elif phase == "confirmed":
            self.confirmed(store_id, t, where, exits)

    def pending(
        self, store_id: str, store: RefStore, t: float, where: str, entries: list[dict[str, Any]]
    ) -> None:
        if where == "outside":
            self.forget(store_id)
        elif where == "inside":
            if t >= self.last_in[store_id] + self.rules.max_gap_s:
                self.forget(store_id)
                self.begin(store_id, store, t)
            self.last_in[store_id] = t
            self.maybe_confirm(store_id, store, t, entries)

    def confirmed(self, store_id: str, t: float, where: str, exits: list[dict[str, Any]]) -> None:
        if where == "inside":
            self.last_in[store_id] = t
            self.leaving.pop(store_id, None)
        elif where == "outside":
            t1 = self.leaving.setdefault(store_id, t)
            if t >= t1 + self.rules.exit_s:
                if store_id not in self.muted:
                    exits.append(self.exit_event(store_id, t, t1, "left"))
                self.forget(store_id)

    def begin(self, store_id: str, store: RefStore, t: float) -> None:
        self.phase[store_id] = "pending"
        self.started[store_id] = t
        self.last_in[store_id] = t
        self.rev[store_id] = store.rev

    def maybe_confirm(
        self, store_id: str, store: RefStore, t: float, entries: list[dict[str, Any]]
    ) -> None:
        dwell = self.rules.dwell_s if store.dwell_s is None else store.dwell_s
        if t < self.started[store_id] + dwell:
            return
        self.phase[store_id] = "confirmed"
        previous = self.emitted_entry.get(store_id)
        if previous is not None and t < previous + self.rules.entry_cooldown_s:
            self.muted.add(store_id)
            self.suppressed += 1
            return
        self.emitted_entry[store_id] = t
        entries.append(
            {"type": "entry", "store_id": store_id, "at": t, "arrived_at": self.started[store_id]}
        )

    def close(self, store_id: str, t: float, reason: str, exits: list[dict[str, Any]]) -> None:
        if self.phase[store_id] == "confirmed" and store_id not in self.muted:
            exits.append(self.exit_event(store_id, t, self.last_in[store_id], reason))
        self.forget(store_id)

    def exit_event(self, store_id: str, t: float, left_at: float, reason: str) -> dict[str, Any]:
        return {
            "type": "exit",
            "store_id": store_id,
            "at": t,
            "left_at": left_at,
            "dwell_s": left_at - self.started[store_id],
            "reason": reason,
        }

    def forget(self, store_id: str) -> None:
        for table in (self.phase, self.started, self.last_in, self.leaving, self.rev):
            table.pop(store_id, None)
        self.muted.discard(store_id)

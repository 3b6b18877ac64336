"""One fixture, ``twin``, over the readable rules of ``geofence.domain`` and their fast
twins in ``geofence.engine``: the tests of tests/twins/ are written once against the
small interface below and run on each, so the engine is held to the reference's answers.

- ``reference``: the domain's rules as they read: every fence tested in turn
  (``FenceShape``), ``screen`` then ``record`` ping after ping, ``step`` ping after ping
  with every store of the catalogue.
- ``engine``: the fast paths as a single ping meets them: the fence index one point at a
  time, ``screen_in_turn``, ``outcome_of`` doing its own lookups.
- ``engine-arrays``: the fast paths as a batch meets them: the index's array steps,
  ``screen_runs``, ``outcome_of`` given the lookups of ``nears_of`` and the verdicts of
  ``screen_runs``, ``passed_by``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pytest

from geofence.domain.geometry import FenceShape, lookup
from geofence.domain.model import (
    DeviceState,
    Fence,
    Ping,
    Rules,
    ScreeningRules,
    VisitEvent,
    VisitRules,
)
from geofence.domain.screening import Screening, record, screen
from geofence.domain.visits import StoreView, step, step_each
from geofence.engine.device import PingResult, StoreViews, nears_of, outcome_of
from geofence.engine.index import FenceIndex
from geofence.engine.screening import Columns, screen_in_turn, screen_runs
from geofence.engine.visits import passed_by

Point = tuple[float, float]  # lat, lng
Run = tuple[DeviceState, list[Ping]]  # a device's state and its pings in ts order
Steps = list[tuple[Screening, list[VisitEvent]]]  # each ping's verdict and events


class Lookup(Protocol):
    def inside(self, points: Sequence[Point]) -> list[list[str]]:
        """Ids of the fences (grown by their margin) holding each point, sorted."""

    def near(self, points: Sequence[Point]) -> list[dict[str, float]]:
        """For each point, at least every fence within the exit margin, with its distance."""

    def distances(self, fence_ids: Sequence[str], points: Sequence[Point]) -> list[float]:
        """Metres from each point to its fence grown by its margin (0.0 inside)."""


class Twin(Protocol):
    name: str

    def lookup(self, fences: Sequence[Fence], *, exit_margin_m: float, resolution: int) -> Lookup:
        """The fences, ready to be asked."""

    def screen(self, runs: Sequence[Run], now: float, rules: ScreeningRules) -> list[Screening]:
        """The verdict on every ping of the runs, each run from its state."""

    def step(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        now: float,
        fences: Sequence[Fence],
        rules: Rules,
    ) -> tuple[DeviceState, Steps]:
        """A device's pings (ts order) through screening and the visit rules."""

    def pass_by(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        verdicts: Sequence[Screening],
        rules: VisitRules,
    ) -> DeviceState:
        """The state after pings of a device with no open visit, none inside a fence."""


# --- the reference -------------------------------------------------------------------------


class ReferenceLookup:
    def __init__(self, fences: Sequence[Fence], exit_margin_m: float) -> None:
        self.shapes = {f.id: FenceShape.of(f) for f in fences}
        self.exit_margin_m = exit_margin_m

    def inside(self, points: Sequence[Point]) -> list[list[str]]:
        return [sorted(i for i, s in self.shapes.items() if s.holds(*p)) for p in points]

    def near(self, points: Sequence[Point]) -> list[dict[str, float]]:
        return [lookup(self.shapes.values(), *p, self.exit_margin_m) for p in points]

    def distances(self, fence_ids: Sequence[str], points: Sequence[Point]) -> list[float]:
        pairs = zip(fence_ids, points, strict=True)
        return [self.shapes[f].distance_m(*p) for f, p in pairs]


class Reference:
    name = "reference"

    def lookup(self, fences: Sequence[Fence], *, exit_margin_m: float, resolution: int) -> Lookup:
        return ReferenceLookup(fences, exit_margin_m)

    def screen(self, runs: Sequence[Run], now: float, rules: ScreeningRules) -> list[Screening]:
        verdicts = []
        for first, pings in runs:
            state = first
            for ping in pings:
                verdict = screen(ping, state, now, rules)
                state = record(state, ping, verdict)
                verdicts.append(verdict)
        return verdicts

    def step(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        now: float,
        fences: Sequence[Fence],
        rules: Rules,
    ) -> tuple[DeviceState, Steps]:
        shapes = [FenceShape.of(f) for f in fences]
        stores = {
            f.id: StoreView(store_id=f.id, fence_rev=f.revision, dwell_s=f.dwell_s) for f in fences
        }

        def distances(ping: Ping) -> dict[str, float]:
            return lookup(shapes, ping.lat, ping.lng, math.inf)

        after, steps = step_each(state, pings, now, stores, distances, rules)
        return after, steps

    def pass_by(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        verdicts: Sequence[Screening],
        rules: VisitRules,
    ) -> DeviceState:
        for ping, verdict in zip(pings, verdicts, strict=True):
            state, _, events = step(state, ping, ping.ts, {}, {}, ScreeningRules(), rules, verdict)
            assert events == []
        return state


# --- the engine ----------------------------------------------------------------------------


def laid_out(runs: Sequence[Run]) -> tuple[list[Ping], list[int], list[DeviceState]]:
    """The runs' pings one after the other, where each run starts, and their states."""
    pings = [p for _, run in runs for p in run]
    starts = [sum(len(run) for _, run in runs[:i]) for i in range(len(runs))]
    return pings, starts, [state for state, _ in runs]


def columns(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points])


class IndexInTurn:
    def __init__(self, index: FenceIndex) -> None:
        self.index = index

    def inside(self, points: Sequence[Point]) -> list[list[str]]:
        return [self.index.inside(*p) for p in points]

    def near(self, points: Sequence[Point]) -> list[dict[str, float]]:
        return [self.index.near(*p) for p in points]

    def distances(self, fence_ids: Sequence[str], points: Sequence[Point]) -> list[float]:
        pairs = zip(fence_ids, points, strict=True)
        return [self.index.distance_m(f, *p) for f, p in pairs]


class IndexArrays(IndexInTurn):
    def inside(self, points: Sequence[Point]) -> list[list[str]]:
        return self.index.inside_many(*columns(points))

    def near(self, points: Sequence[Point]) -> list[dict[str, float]]:
        return self.index.near_arrays(*columns(points))

    def distances(self, fence_ids: Sequence[str], points: Sequence[Point]) -> list[float]:
        found = self.index.distances_arrays(fence_ids, *columns(points))
        return [float(m) for m in found]


def _steps(results: Sequence[PingResult]) -> Steps:
    return [(Screening(r.status, r.reason), r.events) for r in results]  # type: ignore[arg-type]


class Engine:
    name = "engine"

    def lookup(self, fences: Sequence[Fence], *, exit_margin_m: float, resolution: int) -> Lookup:
        index = FenceIndex.build(fences, resolution=resolution, exit_margin_m=exit_margin_m)
        return IndexInTurn(index)

    def screen(self, runs: Sequence[Run], now: float, rules: ScreeningRules) -> list[Screening]:
        return screen_in_turn(*laid_out(runs), now, rules)

    def step(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        now: float,
        fences: Sequence[Fence],
        rules: Rules,
    ) -> tuple[DeviceState, Steps]:
        index = FenceIndex.build(fences, exit_margin_m=rules.visits.exit_margin_m)
        outcome = outcome_of(state, pings, StoreViews(index), now, rules)
        return outcome.state, _steps(outcome.results)

    def pass_by(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        verdicts: Sequence[Screening],
        rules: VisitRules,
    ) -> DeviceState:
        return passed_by(state, pings, verdicts, rules)


class EngineArrays(Engine):
    name = "engine-arrays"

    def lookup(self, fences: Sequence[Fence], *, exit_margin_m: float, resolution: int) -> Lookup:
        index = FenceIndex.build(fences, resolution=resolution, exit_margin_m=exit_margin_m)
        return IndexArrays(index)

    def screen(self, runs: Sequence[Run], now: float, rules: ScreeningRules) -> list[Screening]:
        pings, starts, states = laid_out(runs)
        verdicts = screen_runs(pings, Columns.of(pings), starts, states, now, rules)
        assert verdicts is not None, "runs in ts order, finite: the arrays answer"
        return verdicts

    def step(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        now: float,
        fences: Sequence[Fence],
        rules: Rules,
    ) -> tuple[DeviceState, Steps]:
        index = FenceIndex.build(fences, exit_margin_m=rules.visits.exit_margin_m)
        lats, lngs = columns([(p.lat, p.lng) for p in pings])
        [nears] = nears_of(index, lats, lngs, [(0, len(pings))], [state])
        verdicts = self.screen([(state, list(pings))], now, rules.screening)
        views = StoreViews(index)
        outcome = outcome_of(state, pings, views, now, rules, nears=nears, verdicts=verdicts)
        return outcome.state, _steps(outcome.results)


TWINS: tuple[Twin, ...] = (Reference(), Engine(), EngineArrays())
REFERENCE: Twin = TWINS[0]


@pytest.fixture(scope="session", params=TWINS, ids=[t.name for t in TWINS])
def twin(request: pytest.FixtureRequest) -> Twin:
    """The reference rules, then each of their fast twins."""
    twin: Twin = request.param
    return twin

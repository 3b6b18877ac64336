"""People walking in and out of the sample stores at walking speed, as pings.

Each walker loops through a route of stops: inside a store long enough for the dwell,
then a spot outside it beyond the exit band long enough for the exit debounce, then the
same store again (a revisit, which meets the entry cooldown) or a neighbouring store.
Positions are interpolated along straight lines at 1.1-1.6 m/s, with GPS noise of a
few metres and now and then a ping too coarse to use (flagged ``inaccurate``).

A walker's position is a function of time only, so a ping planned for ``ts`` is the same
whenever it is actually sent: the history can be replayed offline against the reference
model with the very pings the service saw.
"""

from __future__ import annotations

import functools
import math
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import shapely
from shapely.geometry import shape

from geofence.config import Settings
from geofence.domain import geojson
from geofence.engine.index import FenceIndex

ROOT = Path(__file__).resolve().parents[2]
STORES = ROOT / "stores.geojson"
M_PER_DEG_LAT = 111_320.0
INACCURATE_SHARE = 0.01
NEIGHBOUR_M = (25.0, 110.0)  # how far a walker's second store may be
BEYOND_BAND_M = 8.0  # outside stops lie this far past the exit band

Point = tuple[float, float]  # lat, lng


@functools.cache
def catalogue(settings: Settings) -> FenceIndex:
    """The sample stores indexed exactly as the service indexes them."""
    doc = msgspec.json.decode(STORES.read_bytes())
    fences = geojson.parse_feature_collection(doc, **settings.catalogue_limits).fences
    return FenceIndex.build(
        fences, resolution=settings.h3_resolution, exit_margin_m=settings.exit_margin_m
    )


@dataclass(frozen=True)
class Leg:
    """From ``start`` to ``end`` (seconds into the loop) the walker goes ``a`` -> ``b``."""

    start: float
    end: float
    a: Point
    b: Point


@dataclass(frozen=True)
class Walker:
    device_id: str
    legs: tuple[Leg, ...]
    phase_s: float  # where in its loop the walker is at the run's start
    seed: int

    @property
    def loop_s(self) -> float:
        return self.legs[-1].end

    def position(self, t: float) -> Point:
        """Where the walker is ``t`` seconds into the run (no noise)."""
        u = (t + self.phase_s) % self.loop_s
        leg = next(leg for leg in self.legs if u <= leg.end)
        f = 0.0 if leg.end == leg.start else (u - leg.start) / (leg.end - leg.start)
        return (leg.a[0] + f * (leg.b[0] - leg.a[0]), leg.a[1] + f * (leg.b[1] - leg.a[1]))

    def ping(self, ts: float, t0: float) -> dict[str, Any]:
        """The ping the walker's phone sends at ``ts`` (the run started at ``t0``)."""
        rng = random.Random(f"{self.seed}:{ts:.3f}")
        lat, lng = self.position(ts - t0)
        accuracy_m = rng.uniform(4.0, 12.0)
        if rng.random() < INACCURATE_SHARE:
            accuracy_m = rng.uniform(120.0, 300.0)
        north, east = rng.gauss(0.0, accuracy_m / 4), rng.gauss(0.0, accuracy_m / 4)
        lat, lng = moved((lat, lng), north, east)
        return {
            "device_id": self.device_id,
            "lat": round(lat, 6),
            "lon": round(lng, 6),
            "accuracy_m": round(accuracy_m, 1),
            "ts": ts,
        }


def moved(p: Point, north_m: float, east_m: float) -> Point:
    lat, lng = p
    return (
        lat + north_m / M_PER_DEG_LAT,
        lng + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat))),
    )


def metres(a: Point, b: Point) -> float:
    north = (b[0] - a[0]) * M_PER_DEG_LAT
    east = (b[1] - a[1]) * M_PER_DEG_LAT * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


class Town:
    """The stores a walker can go to, and the stops in and around each."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index = catalogue(settings)
        fences = self.index.fences()
        self.ids = [f.id for f in fences]
        points = shapely.point_on_surface([shape(f.geometry) for f in fences])
        self.inside = {f.id: (p.y, p.x) for f, p in zip(fences, points, strict=True)}

    def neighbours(self, store_id: str) -> list[str]:
        here = self.inside[store_id]
        low, high = NEIGHBOUR_M
        others = (s for s in self.ids if s != store_id)
        return [s for s in others if low <= metres(here, self.inside[s]) <= high]

    def outside(self, store_id: str, rng: random.Random) -> Point:
        """A spot beyond the exit band of the store, a short walk from inside it."""
        far_m = self.settings.exit_margin_m + BEYOND_BAND_M
        start = self.inside[store_id]
        bearing = rng.uniform(0, 2 * math.pi)
        for step in range(1, 200):
            p = moved(start, 2.0 * step * math.cos(bearing), 2.0 * step * math.sin(bearing))
            if self.index.distance_m(store_id, p[0], p[1]) > far_m:
                return p
        raise AssertionError(f"no spot outside {store_id}")

    def walker(self, device_id: str, rng: random.Random) -> Walker:
        """A loop in and out of one store, or of it and a neighbour (half the walkers)."""
        first = rng.choice(self.ids)
        near = self.neighbours(first)
        second = rng.choice(near) if near and rng.random() < 0.5 else first
        stops: list[tuple[Point, float]] = []
        s = self.settings
        for store_id in (first, second):
            stops.append((self.inside[store_id], s.dwell_s + rng.uniform(3.0, 9.0)))
            stops.append((self.outside(store_id, rng), s.exit_s + rng.uniform(3.0, 8.0)))
        legs = route(stops, speed_mps=rng.uniform(1.1, 1.6))
        phase_s = rng.uniform(0, legs[-1].end)
        return Walker(device_id, legs, phase_s=phase_s, seed=rng.getrandbits(32))


def route(stops: list[tuple[Point, float]], speed_mps: float) -> tuple[Leg, ...]:
    """Stay at each stop, then walk to the next; the last walk leads back to the first."""
    legs: list[Leg] = []
    t = 0.0
    for i, (here, stay_s) in enumerate(stops):
        there = stops[(i + 1) % len(stops)][0]
        legs.append(Leg(t, t + stay_s, here, here))
        t += stay_s
        walk_s = metres(here, there) / speed_mps
        legs.append(Leg(t, t + walk_s, here, there))
        t += walk_s
    return tuple(legs)


def walkers(town: Town, n: int, *, label: str, seed: int) -> list[Walker]:
    """``n`` walkers with ids unique to this run (``label`` says which test made them)."""
    rng = random.Random(seed)
    run = secrets.token_hex(3)
    return [town.walker(f"{label}-{run}-{i:05d}", rng) for i in range(n)]

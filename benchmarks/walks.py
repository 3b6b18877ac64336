"""People walking real tracks among the stores, for the single-ping benchmarks.

The shape of every walk comes from a real phone GPS track (``tests/data/
limerick_bus304_2019-02-18.gpx``, a bus ride of 2,144 fixes; see tests/data/README.md):
a device walks from store to store, each leg a piece of that track turned, scaled and
moved so that it starts at one store and ends at the next (a store a few hundred metres
away in the catalogue), at a walking pace. At about half of the stores it reaches, the
device stays a few minutes (long enough for an entry, then an exit); at the others it
walks on. On the way it passes other stores. Each device pings at its own steady interval
(a phone SDK in the foreground), with GPS noise whose spread is the ping's accuracy.

Each device's pings are dated so that its last one is ``now``: with the interval of a
few seconds, a walk of some hundreds of pings starts an hour or two ago (the contract
refuses pings more than 24 h old, and the service is run with ``notify_max_lag_s`` to
match). The same arguments give the same walks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import shape

from geofence.adapters.traces import read_gpx
from geofence.domain.model import Fence

FloatArray = npt.NDArray[np.float64]

TRACK = Path(__file__).resolve().parents[1] / "tests" / "data" / "limerick_bus304_2019-02-18.gpx"
M_PER_DEG = 111_320.0
SPEED_M_S = (0.9, 1.6)  # walking
EVERY_S = (4.0, 12.0)  # seconds between two pings of a device
STAY_SHARE = 0.4  # of the stores a device walks to, the share it goes into
STAY_S = (150.0, 480.0)  # how long a device stays in a store it goes into
LEG_M = (120.0, 600.0)  # straight distance between two stores of a walk
ACCURACY_M = (5.0, 40.0)  # log-uniform


@dataclass(frozen=True)
class Walks:
    """Every device's pings, ``pings`` of them each, in columns of shape (devices, pings)."""

    lat: FloatArray
    lng: FloatArray
    accuracy_m: FloatArray
    ts: FloatArray

    @property
    def devices(self) -> int:
        return int(self.lat.shape[0])

    @property
    def pings(self) -> int:
        return int(self.lat.shape[1])


def track_m() -> FloatArray:
    """The real track as metres east and north of its first fix, one row a fix (only the
    fixes that moved: a standing bus adds nothing to a walk's shape)."""
    fixes = [(p.ping.lat, p.ping.lng) for p in read_gpx(TRACK, device_id="t", accuracy_m=10.0)]
    lat, lng = np.asarray(fixes).T
    xy = np.column_stack(
        ((lng - lng[0]) * M_PER_DEG * math.cos(math.radians(lat[0])), (lat - lat[0]) * M_PER_DEG)
    )
    step = np.hypot(*np.diff(xy, axis=0).T)
    return np.asarray(xy[np.concatenate(([True], step > 0.5))], dtype=np.float64)


def make(fences: list[Fence], devices: int, pings: int, now: float, seed: int = 11) -> Walks:
    """``devices`` walks of ``pings`` pings each among ``fences``, the last ping at ``now``."""
    rng = np.random.default_rng(seed)
    centres = shapely.get_coordinates(shapely.centroid([shape(f.geometry) for f in fences]))
    centres = centres[np.argsort(centres[:, 1], kind="stable")]
    track = track_m()
    along = np.concatenate(([0.0], np.cumsum(np.hypot(*np.diff(track, axis=0).T))))
    out = [_walk(rng, centres, track, along, pings, now) for _ in range(devices)]
    return Walks(*(np.vstack([w[k] for w in out]) for k in range(4)))


def _walk(
    rng: np.random.Generator,
    centres: FloatArray,
    track: FloatArray,
    along: FloatArray,
    pings: int,
    now: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    every = rng.uniform(*EVERY_S)
    speed = rng.uniform(*SPEED_M_S)
    needed_s = pings * every
    store = int(rng.integers(len(centres)))
    lng0, lat0 = centres[store]
    east = M_PER_DEG * math.cos(math.radians(lat0))
    here = np.array([0.0, 0.0])
    knots_t, knots_xy = [0.0], [here]
    t = rng.uniform(0.0, 60.0)  # a start on the way to the first store
    while t < needed_s:
        if rng.random() < STAY_SHARE:  # in, for a while, walking about
            stay = rng.uniform(*STAY_S)
            knots_t.append(t + stay)
            knots_xy.append(here)
            t += stay
        store = _next_store(rng, centres, store, east)
        target = (centres[store] - (lng0, lat0)) * (east, M_PER_DEG)
        leg = _leg(rng, track, along, here, target)
        steps = np.hypot(*np.diff(leg, axis=0).T)
        times = t + np.cumsum(steps) / speed
        knots_t += times.tolist()
        knots_xy += list(leg[1:])
        t, here = float(times[-1]), target
    kt, kxy = np.asarray(knots_t), np.asarray(knots_xy)
    at = np.arange(pings) * every
    x, y = np.interp(at, kt, kxy[:, 0]), np.interp(at, kt, kxy[:, 1])
    accuracy = np.exp(rng.uniform(math.log(ACCURACY_M[0]), math.log(ACCURACY_M[1]), pings))
    x = x + rng.normal(0.0, accuracy / 2)
    y = y + rng.normal(0.0, accuracy / 2)
    ts = now - at[-1] + at
    lat = np.asarray(lat0 + y / M_PER_DEG, dtype=np.float64)
    lng = np.asarray(lng0 + x / east, dtype=np.float64)
    return lat, lng, np.asarray(np.round(accuracy, 1), dtype=np.float64), ts


def _next_store(rng: np.random.Generator, centres: FloatArray, store: int, east: float) -> int:
    """A store a walk away from ``store`` (the nearest ones when none is that far).
    ``centres`` are sorted by latitude: only a band of them is measured."""
    band = LEG_M[1] / M_PER_DEG
    lo, hi = np.searchsorted(centres[:, 1], [centres[store, 1] - band, centres[store, 1] + band])
    d = np.hypot(*((centres[lo:hi] - centres[store]) * (east, M_PER_DEG)).T)
    near = np.flatnonzero((d >= LEG_M[0]) & (d <= LEG_M[1]))
    if not len(near):
        near = np.argsort(d)[1:6]
    return int(lo) + int(rng.choice(near))


def _leg(
    rng: np.random.Generator,
    track: FloatArray,
    along: FloatArray,
    start: FloatArray,
    end: FloatArray,
) -> FloatArray:
    """A piece of the track about as long as a walk from ``start`` to ``end``, turned,
    scaled and moved so that it runs from one to the other."""
    wanted = float(np.hypot(*(end - start))) * rng.uniform(1.1, 1.5)
    first = rng.uniform(0.0, max(1.0, along[-1] - wanted))
    a, b = np.searchsorted(along, [first, first + wanted])
    piece = track[a : max(b, a + 2) + 1]
    chord = piece[-1] - piece[0]
    length = float(np.hypot(*chord))
    goal = end - start
    scale = float(np.hypot(*goal)) / max(length, 1e-9)
    if not 0.3 < scale < 3.0:  # the piece winds back on itself: go straight
        return np.vstack((start, end))
    turn = math.atan2(goal[1], goal[0]) - math.atan2(chord[1], chord[0])
    c, s = math.cos(turn) * scale, math.sin(turn) * scale
    rel = piece - piece[0]
    moved = np.column_stack((rel[:, 0] * c - rel[:, 1] * s, rel[:, 0] * s + rel[:, 1] * c))
    return np.asarray(start + moved, dtype=np.float64)

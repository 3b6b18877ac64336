"""A metro area of stores and the people walking through it, for the benchmarks.

Fences: the 162 Helsinki shop footprints (© OpenStreetMap contributors, ODbL) tiled over a
40×40 km area (``benchmarks.index.tiles``). Devices walk at pedestrian speeds, with GPS
noise (accuracy 5–65 m, a few outliers that the jump check should catch): most of them
anywhere in the area, and a share of shoppers who start near a store, walk to one of the
same block and loiter in it for some minutes (long enough for an entry), then walk on to
the next. Each device pings every 5–60 s and, as phone SDKs do in
the background, uploads what it collected every few minutes; an ingest backend packs the
uploads into batches of up to 1000 pings.

Everything is drawn from a seeded generator: the same arguments give the same pings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import shape

from benchmarks.index import tiles
from geofence.domain.model import Fence

M_PER_DEG_LAT = 111_320.0
SHOPPER_SHARE = 0.3
OUTLIER_SHARE = 0.003
UPLOAD_EVERY_S = 300.0
BATCH_SIZE = 1000


@dataclass(frozen=True)
class Pings:
    """Columns of every ping, in upload order: device index, ts, lat, lng, accuracy."""

    device: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    lng: npt.NDArray[np.float64]
    accuracy_m: npt.NDArray[np.float64]
    uploads: list[tuple[int, int]]  # [start, end) rows of one device's upload

    def __len__(self) -> int:
        return len(self.ts)

    def batches(self, size: int = BATCH_SIZE) -> list[list[tuple[int, int]]]:
        """Whole uploads packed into batches of at most ``size`` pings, in upload order."""
        out: list[list[tuple[int, int]]] = [[]]
        filled = 0
        for start, end in self.uploads:
            if filled + (end - start) > size and out[-1]:
                out.append([])
                filled = 0
            out[-1].append((start, end))
            filled += end - start
        return out


@dataclass(frozen=True)
class Workload:
    fences: list[Fence]
    device_ids: list[str]
    pings: Pings
    started_at: float
    ended_at: float


def make(
    fences: int = 10_000, devices: int = 2_000, duration_s: float = 3_600.0, seed: int = 7
) -> Workload:
    """``devices`` walking for ``duration_s`` among ``fences`` stores, ending one second ago."""
    shop = {"tags": ["shop"]}  # what the benchmarks' offer targets
    catalogue = [
        msgspec.structs.replace(f, tags=("shop",), properties=shop) for f in tiles(fences, seed)
    ]
    rng = np.random.default_rng(seed)
    shapes = [shape(f.geometry) for f in catalogue]
    centres = shapely.get_coordinates(shapely.centroid(shapes))  # lng, lat
    end = 1_700_000_000.0
    start = end - duration_s
    rows = [_walk(rng, centres, start, end) for _ in range(devices)]
    pings = _in_uploads(rows, rng)
    ids = [f"bench-{i:06d}" for i in range(devices)]
    return Workload(catalogue, ids, pings, start, end)


def _walk(
    rng: np.random.Generator, centres: npt.NDArray[np.float64], start: float, end: float
) -> npt.NDArray[np.float64]:
    """One device's pings as rows (ts, lat, lng, accuracy)."""
    shopper = rng.random() < SHOPPER_SHARE
    if shopper:  # starts a street or two from a store
        lng, lat = centres[rng.integers(len(centres))] + rng.normal(0, 0.002, 2)
    else:  # anywhere in the metro area
        lng, lat = rng.uniform(centres.min(axis=0), centres.max(axis=0))
    speed = rng.uniform(0.8, 1.6)
    every = rng.uniform(5.0, 60.0)
    heading = rng.uniform(0, 2 * math.pi)
    target: npt.NDArray[np.float64] | None = None
    loiter_until = -1.0
    t = start + rng.uniform(0, every)
    out = []
    while t < end:
        dt = every * rng.uniform(0.8, 1.2)
        if shopper and target is None and t > loiter_until:
            near = _nearest(centres, lng, lat)  # a store of the same block, a walk away
            target = centres[rng.integers(max(0, near - 20), min(len(centres), near + 20))]
        if target is not None:
            lng, lat, arrived = _toward(lng, lat, target, speed * dt)
            if arrived:
                loiter_until, target = t + rng.uniform(180.0, 900.0), None
        elif t > loiter_until:
            heading += rng.normal(0, 0.3)
            lng, lat = _moved(lng, lat, heading, speed * dt)
        accuracy = float(np.exp(rng.uniform(math.log(5.0), math.log(65.0))))
        noise = rng.normal(0, accuracy / 2, 2)
        if rng.random() < OUTLIER_SHARE:
            noise = rng.normal(0, 1500.0, 2)
        p_lng, p_lat = _moved_xy(lng, lat, noise[0], noise[1])
        out.append((t, p_lat, p_lng, accuracy))
        t += dt
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def _nearest(centres: npt.NDArray[np.float64], lng: float, lat: float) -> int:
    return int(np.argmin((centres[:, 0] - lng) ** 2 + (centres[:, 1] - lat) ** 2))


def _toward(
    lng: float, lat: float, target: npt.NDArray[np.float64], step_m: float
) -> tuple[float, float, bool]:
    dx = (target[0] - lng) * M_PER_DEG_LAT * math.cos(math.radians(lat))
    dy = (target[1] - lat) * M_PER_DEG_LAT
    far = math.hypot(dx, dy)
    if far <= step_m:
        return float(target[0]), float(target[1]), True
    return *_moved_xy(lng, lat, dx / far * step_m, dy / far * step_m), False


def _moved(lng: float, lat: float, heading: float, step_m: float) -> tuple[float, float]:
    return _moved_xy(lng, lat, math.cos(heading) * step_m, math.sin(heading) * step_m)


def _moved_xy(lng: float, lat: float, dx_m: float, dy_m: float) -> tuple[float, float]:
    d_lat = dy_m / M_PER_DEG_LAT
    d_lng = dx_m / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lng + d_lng, lat + d_lat


def _in_uploads(rows: list[npt.NDArray[np.float64]], rng: np.random.Generator) -> Pings:
    """Cut each device's pings into uploads every few minutes and order them by upload time."""
    pieces: list[tuple[float, int, npt.NDArray[np.float64]]] = []
    for device, walk in enumerate(rows):
        if not len(walk):
            continue
        offset = rng.uniform(0, UPLOAD_EVERY_S)
        slot = np.floor((walk[:, 0] - walk[0, 0] + offset) / UPLOAD_EVERY_S)
        for s in np.unique(slot):
            chunk = walk[slot == s]
            pieces.append((float(chunk[-1, 0]), device, chunk))
    pieces.sort(key=lambda p: p[0])
    uploads, at = [], 0
    for _, _, chunk in pieces:
        uploads.append((at, at + len(chunk)))
        at += len(chunk)
    table = np.concatenate([p[2] for p in pieces])
    owner = np.concatenate([np.full(len(p[2]), p[1], dtype=np.int64) for p in pieces])
    return Pings(owner, table[:, 0], table[:, 1], table[:, 2], table[:, 3], uploads)

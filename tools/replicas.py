"""Many real-shaped fences for tests and benchmarks: the 162 Helsinki shop footprints
(© OpenStreetMap contributors, ODbL) copied into blocks over a grid of cities around the
world, each copy turned and scaled a little about its own centre, so that no two fences
are the same shape in the same place. Made straight into the fence index's compact table:
a million ``Fence`` structs with GeoJSON lists would take several gigabytes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

from geofence.engine.fences import FenceTable

DATA = Path(__file__).parents[1] / "tests" / "data" / "helsinki_store_polygons.geojson"
BLOCKS_PER_CITY = 64  # 8×8 copies of the footprints, about 10,000 fences a city
BLOCK_M = 2_500.0  # the footprints span about 1.0 × 1.7 km
M_PER_DEG_LAT = 110_540.0
M_PER_DEG_LNG = 111_320.0


def footprints() -> tuple[Any, Any, Any]:
    """The footprints' vertices in metres from their own centres, their ring and polygon
    offsets, and each one's centre in metres from the first one's area's corner."""
    doc = json.loads(DATA.read_text())
    shapes = [shape(f["geometry"]) for f in doc["features"]]
    _, coords, (rings, polygons) = shapely.to_ragged_array(shapes)
    bounds = shapely.bounds(shapes)
    centre = (bounds[:, :2] + bounds[:, 2:]) / 2.0
    lat_ref = float(bounds[:, 1].min())
    scale = np.array((M_PER_DEG_LNG * math.cos(math.radians(lat_ref)), M_PER_DEG_LAT))
    owner = np.repeat(np.arange(len(shapes)), np.diff(rings[polygons]))
    local = (coords - centre[owner]) * scale
    where = (centre - bounds[:, :2].min(axis=0)) * scale
    return local, (rings, polygons), where


def cities(count: int) -> Any:
    """(count, 2) lat/lng of city centres on a grid over the inhabited latitudes."""
    per_row = math.ceil(math.sqrt(count * 3))
    rows = math.ceil(count / per_row)
    k = np.arange(count)
    lats = -40.0 + (k // per_row) * (100.0 / max(rows, 1))
    lngs = -150.0 + (k % per_row) * (300.0 / per_row)
    return np.column_stack((lats, lngs))


def replicas(n: int, seed: int) -> FenceTable:
    """``n`` fences: the footprints, copy after copy, each block of copies in a city."""
    local, (rings, polygons), where = footprints()
    per_block = len(where)
    blocks = math.ceil(n / per_block)
    sizes = np.diff(rings[polygons])  # vertices per footprint
    fence_shape = np.tile(np.arange(per_block), blocks)[:n]
    fence_block = np.arange(n) // per_block
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-0.25, 0.25, n)
    scale = rng.uniform(0.85, 1.15, n)
    centre = cities(math.ceil(blocks / BLOCKS_PER_CITY))
    city = centre[fence_block // BLOCKS_PER_CITY]
    slot = fence_block % BLOCKS_PER_CITY
    side = math.isqrt(BLOCKS_PER_CITY)
    jitter = rng.uniform(0.0, 400.0, (blocks, 2))[fence_block]
    origin = np.column_stack((slot % side, slot // side)) * BLOCK_M + jitter + where[fence_shape]
    # every vertex of every fence, from its footprint's vertices
    counts = sizes[fence_shape]
    owner = np.repeat(np.arange(n), counts)
    xy = local[_gather(rings[polygons][:-1][fence_shape], counts)]
    cos, sin, k = np.cos(angle)[owner], np.sin(angle)[owner], scale[owner]
    x = (xy[:, 0] * cos - xy[:, 1] * sin) * k + origin[owner, 0]
    y = (xy[:, 0] * sin + xy[:, 1] * cos) * k + origin[owner, 1]
    lat = city[owner, 0] + y / M_PER_DEG_LAT
    lng = city[owner, 1] + x / (M_PER_DEG_LNG * np.cos(np.radians(city[owner, 0])))
    ring_counts = np.diff(polygons)[fence_shape]
    fence_rings = _gather(polygons[:-1][fence_shape], ring_counts)
    return FenceTable(
        [f"f{i}" for i in range(n)],
        np.column_stack((lng, lat)),
        _offsets(np.diff(rings)[fence_rings]),
        _offsets(ring_counts),
        np.arange(n + 1),
    )


def _gather(firsts: Any, counts: Any) -> Any:
    """``firsts[i], firsts[i] + 1, ...`` (``counts[i]`` of them) for each ``i``, in turn."""
    return np.repeat(firsts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())


def _offsets(sizes: Any) -> Any:
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def points(table: FenceTable, n: int, seed: int, inside_share: float = 0.2) -> tuple[Any, Any]:
    """Within 10 km of random fences (so over the cities' blocks), a share of them drawn
    in random fences' bounding boxes."""
    rng = np.random.default_rng(seed)
    starts, _ = table.vertex_ranges()
    low = np.minimum.reduceat(table.coords, starts)
    high = np.maximum.reduceat(table.coords, starts)
    pick = rng.integers(0, len(table), n)
    k = int(n * inside_share)
    boxed = rng.uniform(low[pick[:k]], high[pick[:k]])
    lat = low[pick[k:], 1]
    metres = rng.uniform(-10_000.0, 10_000.0, (n - k, 2))
    degrees = metres / np.column_stack(
        (M_PER_DEG_LNG * np.cos(np.radians(lat)), np.full_like(lat, M_PER_DEG_LAT))
    )
    both = np.concatenate((boxed, low[pick[k:]] + degrees))[rng.permutation(n)]
    return both[:, 1].copy(), both[:, 0].copy()

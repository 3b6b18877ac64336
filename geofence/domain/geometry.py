"""Fence geometry: the H3-covered fence index and the metric helpers behind it.

This is the only module that talks to h3 and shapely; everything else sees lat/lng floats
and fence ids.

Each fence lives in its own local metric plane centred on it: a mid-latitude projection
on the WGS 84 ellipsoid (x = Δλ·N(φm)·cos φm, y = Δφ·M(φm), φm the mean of the point's
and the origin's latitude). Distances in that plane agree with geodesic distances to a
few centimetres for points within several kilometres of the fence, so inside/outside and
``distance_m`` are computed on the exact shape, never on the H3 approximation.

The H3 cover is only a candidate filter. Every cell within ``margin_m + exit_margin_m`` of
a fence is indexed with one of three kinds:

- interior: the whole hexagon lies inside the fence grown by ``margin_m`` (answered
  without geometry);
- edge: the hexagon touches the grown fence (one exact test);
- band: the hexagon only reaches the hysteresis band (reported by ``near``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely
from h3.api import basic_int as h3

from geofence.domain.model import Fence

FloatArray = npt.NDArray[np.float64]

_A: Final = 6_378_137.0  # WGS 84 semi-major axis, metres
_E2: Final = 6.694379990141316e-3  # WGS 84 first eccentricity squared
_RAD: Final = math.pi / 180.0
_SLACK_M: Final = 0.05  # cell classification keeps this far from any boundary
_QUAD_SEGS: Final = 8
# A buffer's arcs are chords inside the true circle; dividing by this makes it enclose it.
_CHORD: Final = math.cos(math.pi / (4 * _QUAD_SEGS))

INTERIOR: Final = 0
EDGE: Final = 1
BAND: Final = 2
_KIND_BITS: Final = 2
_KIND_MASK: Final = (1 << _KIND_BITS) - 1


# --- the local plane ---------------------------------------------------------------------


def to_plane(lat0: float, lng0: float, lat: float, lng: float) -> tuple[float, float]:
    """Metres east and north of (lat0, lng0)."""
    phi_m = (lat + lat0) * (0.5 * _RAD)
    s = math.sin(phi_m)
    w = 1.0 - _E2 * s * s
    n = _A / math.sqrt(w)
    d_lng = (lng - lng0 + 540.0) % 360.0 - 180.0
    return d_lng * _RAD * n * math.cos(phi_m), (lat - lat0) * _RAD * n * (1.0 - _E2) / w


def to_plane_many(
    lat0: float, lng0: float, lats: FloatArray, lngs: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`to_plane`."""
    phi_m = (lats + lat0) * (0.5 * _RAD)
    s = np.sin(phi_m)
    w = 1.0 - _E2 * s * s
    n = _A / np.sqrt(w)
    d_lng = (lngs - lng0 + 540.0) % 360.0 - 180.0
    return d_lng * _RAD * n * np.cos(phi_m), (lats - lat0) * _RAD * n * (1.0 - _E2) / w


def from_plane_many(
    lat0: float, lng0: float, xs: FloatArray, ys: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`to_plane_many` (a few fixed-point steps on the latitude)."""
    lats = np.full_like(ys, lat0)
    for _ in range(4):
        phi_m = (lats + lat0) * (0.5 * _RAD)
        s = np.sin(phi_m)
        w = 1.0 - _E2 * s * s
        n = _A / np.sqrt(w)
        lats = lat0 + ys / (_RAD * n * (1.0 - _E2) / w)
    lngs = lng0 + xs / (_RAD * n * np.cos(phi_m))
    return lats, lngs


# --- one fence in its plane --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    """A fence prepared for tests: ``base`` is the polygon, or the centre of a circle whose
    radius is ``offset_m``. The fence is everything within ``offset_m + margin_m`` of base."""

    fence: Fence
    revision: str
    lat0: float
    lng0: float
    base: Any
    offset_m: float
    margin_m: float
    extent_m: float  # farthest vertex of ``base`` from the plane's origin

    @property
    def reach_m(self) -> float:
        return self.offset_m + self.margin_m

    @property
    def is_circle(self) -> bool:
        return self.offset_m > 0.0

    def raw_distance(self, lat: float, lng: float) -> float:
        """Metres from the point to ``base`` (0 inside a polygon)."""
        x, y = to_plane(self.lat0, self.lng0, lat, lng)
        if self.is_circle:
            return math.hypot(x, y)
        return float(shapely.distance(self.base, shapely.Point(x, y)))

    def contains(self, lat: float, lng: float) -> bool:
        x, y = to_plane(self.lat0, self.lng0, lat, lng)
        if self.is_circle:
            return math.hypot(x, y) <= self.reach_m
        if self.margin_m == 0.0:
            return bool(shapely.intersects_xy(self.base, x, y))
        return bool(shapely.dwithin(self.base, shapely.Point(x, y), self.margin_m))

    def contains_many(self, lats: FloatArray, lngs: FloatArray) -> npt.NDArray[np.bool_]:
        xs, ys = to_plane_many(self.lat0, self.lng0, lats, lngs)
        if self.is_circle:
            return np.asarray(np.hypot(xs, ys) <= self.reach_m)
        if self.margin_m == 0.0:
            return np.asarray(shapely.intersects_xy(self.base, xs, ys))
        return np.asarray(shapely.dwithin(self.base, shapely.points(xs, ys), self.margin_m))

    def distance_m(self, lat: float, lng: float) -> float:
        return max(0.0, self.raw_distance(lat, lng) - self.reach_m)


def _geometry_lnglat(geometry: dict[str, Any]) -> Any:
    return shapely.geometry.shape(geometry)


def _polygon_parts(geometry: dict[str, Any]) -> list[list[FloatArray]]:
    """The rings of each polygon as (n, 2) lng/lat arrays."""
    kind, coords = geometry["type"], geometry["coordinates"]
    polygons = [coords] if kind == "Polygon" else coords
    return [[np.asarray(r, dtype=np.float64)[:, :2] for r in rings] for rings in polygons]


def _make_slots(fences: Sequence[Fence]) -> list[_Slot]:
    """Every fence in its own plane; the polygons are built in a few vectorised calls."""
    polygonal = [i for i, f in enumerate(fences) if f.geometry["type"] != "Point"]
    shapes = _Shapes([_polygon_parts(fences[i].geometry) for i in polygonal])
    made = dict(zip(polygonal, shapes.slots([fences[i] for i in polygonal]), strict=True))
    return [made.get(i) or _circle_slot(f) for i, f in enumerate(fences)]


def _circle_slot(fence: Fence) -> _Slot:
    lng0, lat0 = (float(v) for v in fence.geometry["coordinates"][:2])
    radius, margin = float(fence.radius_m or 0.0), float(fence.margin_m)
    return _Slot(fence, fence.revision, lat0, lng0, shapely.Point(0.0, 0.0), radius, margin, 0.0)


class _Shapes:
    """Many (Multi)Polygons projected to their own planes at once."""

    def __init__(self, fences: list[list[list[FloatArray]]]) -> None:
        rings = [ring for parts in fences for rings in parts for ring in rings]
        self.ring_sizes = np.asarray([len(r) for r in rings], dtype=np.intp)
        self.parts_per_fence = [len(parts) for parts in fences]
        self.rings_per_part = [len(rings) for parts in fences for rings in parts]
        sizes = [sum(len(r) for rings in parts for r in rings) for parts in fences]
        self.owner = np.repeat(np.arange(len(fences)), sizes)
        coords = np.concatenate(rings) if rings else np.zeros((0, 2))
        self.lngs, self.lats = coords[:, 0], coords[:, 1]

    def origins(self) -> tuple[FloatArray, FloatArray]:
        n = len(self.parts_per_fence)
        lo = np.full(n, np.inf), np.full(n, np.inf)
        hi = np.full(n, -np.inf), np.full(n, -np.inf)
        for k, values in enumerate((self.lats, self.lngs)):
            np.minimum.at(lo[k], self.owner, values)
            np.maximum.at(hi[k], self.owner, values)
        return (lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0

    def slots(self, fences: list[Fence]) -> list[_Slot]:
        lat0, lng0 = self.origins()
        xs, ys = to_plane_many(lat0[self.owner], lng0[self.owner], self.lats, self.lngs)  # type: ignore[arg-type]
        extent = np.zeros(len(fences))
        np.maximum.at(extent, self.owner, np.hypot(xs, ys))
        bases = self.polygons(xs, ys)
        shapely.prepare(bases)
        return [
            _Slot(f, f.revision, la, ln, b, 0.0, float(f.margin_m), e)
            for f, la, ln, b, e in zip(
                fences, lat0.tolist(), lng0.tolist(), bases, extent.tolist(), strict=True
            )
        ]

    def polygons(self, xs: FloatArray, ys: FloatArray) -> Any:
        ring_ids = np.repeat(np.arange(len(self.ring_sizes)), self.ring_sizes)
        rings = shapely.linearrings(xs, ys, indices=ring_ids)
        part_ids = np.repeat(np.arange(len(self.rings_per_part)), self.rings_per_part)
        parts = shapely.polygons(rings, indices=part_ids)
        fence_ids = np.repeat(np.arange(len(self.parts_per_fence)), self.parts_per_fence)
        multi = shapely.multipolygons(parts, indices=fence_ids)
        single = np.asarray(self.parts_per_fence) == 1
        return np.where(single, shapely.get_geometry(multi, 0), multi)


def _planar(lat0: float, lng0: float) -> Any:
    def apply(coords: FloatArray) -> FloatArray:
        xs, ys = to_plane_many(lat0, lng0, coords[:, 1], coords[:, 0])
        return np.column_stack((xs, ys))

    return apply


def _unplanar(lat0: float, lng0: float) -> Any:
    def apply(coords: FloatArray) -> FloatArray:
        lats, lngs = from_plane_many(lat0, lng0, coords[:, 0], coords[:, 1])
        return np.column_stack((lngs, lats))

    return apply


# --- the H3 cover ------------------------------------------------------------------------
#
# Cells are classified from their centres: a hexagon lies within its circumradius ``r`` of
# its centre, so by the triangle inequality a cell whose centre is within ``d - r`` of the
# fence lies wholly within ``d``, and a cell whose centre is farther than ``d + r`` cannot
# reach ``d``. This never drops a cell the fence touches (the cover does not depend on
# H3's centre-based polygon fill, which misses fences smaller than a cell); it only marks
# a few extra cells as edge or band, which costs an exact test, never a wrong answer.


def _circumradius_m(cell: int) -> float:
    ring = np.asarray(h3.cell_to_boundary(cell), dtype=np.float64)
    lat, lng = h3.cell_to_latlng(cell)
    xs, ys = to_plane_many(lat, lng, ring[:, 0], ring[:, 1])
    # Cells in one coarse parent differ in size by far less than this.
    return float(np.hypot(xs, ys).max()) * 1.05 + _SLACK_M


class _Cover:
    """Builds the cover of many fences at once, so the geometry runs vectorised."""

    def __init__(self, slots: Sequence[_Slot], exit_margin_m: float, resolution: int) -> None:
        self.slots = slots
        self.exit_margin_m = exit_margin_m
        self.resolution = resolution
        self._radius: dict[int, float] = {}

    def radius_m(self, cell: int) -> float:
        parent = h3.cell_to_parent(cell, min(self.resolution, 5))
        if parent not in self._radius:
            self._radius[parent] = _circumradius_m(cell)
        return self._radius[parent]

    def candidates(self, slot: _Slot) -> tuple[list[int], float]:
        """Every cell whose centre may lie within reach + exit margin + one circumradius."""
        centre = h3.latlng_to_cell(slot.lat0, slot.lng0, self.resolution)
        radius = self.radius_m(centre)
        far = slot.extent_m + slot.reach_m + self.exit_margin_m + 2.0 * radius
        # Ring k holds every cell whose centre is within 1.5·k·edge of the centre cell's.
        k = math.ceil(far / (1.5 * radius / 1.1))
        return h3.grid_disk(centre, k), radius

    def run(self) -> list[tuple[int, int, int]]:
        """(cell, slot number, kind) for every indexed pair."""
        cells: list[int] = []
        owner: list[int] = []
        radius: list[float] = []
        for i, slot in enumerate(self.slots):
            found, r = self.candidates(slot)
            cells += found
            owner += [i] * len(found)
            radius += [r] * len(found)
        kinds = self.classify(cells, np.asarray(owner, dtype=np.intp), np.asarray(radius))
        return [(c, o, k) for c, o, k in zip(cells, owner, kinds.tolist(), strict=True) if k >= 0]

    def classify(self, cells: list[int], owner: npt.NDArray[np.intp], r: FloatArray) -> Any:
        dist, depth = self.centre_distances(cells, owner)
        reach = np.asarray([s.reach_m for s in self.slots], dtype=np.float64)[owner]
        interior = (dist + r <= reach) | (depth >= r)
        edge = dist <= reach + r
        band = dist <= reach + self.exit_margin_m + r
        return np.where(interior, INTERIOR, np.where(edge, EDGE, np.where(band, BAND, -1)))

    def centre_distances(
        self, cells: list[int], owner: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray]:
        """Per pair: metres from the cell centre to ``base``, and how deep inside it is."""
        ll = np.asarray([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
        lat0 = np.asarray([s.lat0 for s in self.slots], dtype=np.float64)[owner]
        lng0 = np.asarray([s.lng0 for s in self.slots], dtype=np.float64)[owner]
        xs, ys = to_plane_many(lat0, lng0, ll[:, 0], ll[:, 1])  # type: ignore[arg-type]
        bases = np.asarray([s.base for s in self.slots], dtype=object)
        boundaries = shapely.boundary(bases)[owner]
        bases = bases[owner]
        points = shapely.points(xs, ys)
        outside = np.asarray(shapely.distance(bases, points), dtype=np.float64)
        depth = np.asarray(shapely.distance(boundaries, points), dtype=np.float64)
        return outside, np.where(outside > 0.0, 0.0, depth)


# --- the index ---------------------------------------------------------------------------


class FenceIndex:
    """Which fences hold a point, and how far the nearby ones are.

    ``inside`` costs one H3 lookup and one dict probe for a point far from every fence,
    and one exact test per fence whose edge crosses the point's cell.
    """

    __slots__ = ("_by_id", "_cells", "_exit_margin_m", "_resolution", "_slots")

    def __init__(
        self,
        slots: list[_Slot],
        cells: dict[int, tuple[int, ...]],
        *,
        resolution: int,
        exit_margin_m: float,
    ) -> None:
        self._slots = slots
        self._cells = cells
        self._by_id = {s.fence.id: i for i, s in enumerate(slots)}
        self._resolution = resolution
        self._exit_margin_m = exit_margin_m
        if len(self._by_id) != len(slots):
            raise ValueError("fence ids must be unique")

    @classmethod
    def build(
        cls, fences: Iterable[Fence], *, resolution: int = 11, exit_margin_m: float = 30.0
    ) -> FenceIndex:
        slots = _make_slots(list(fences))
        grouped: defaultdict[int, list[int]] = defaultdict(list)
        for cell, i, kind in _Cover(slots, exit_margin_m, resolution).run():
            grouped[cell].append((i << _KIND_BITS) | kind)
        canonical: dict[tuple[int, ...], tuple[int, ...]] = {}
        cells: dict[int, tuple[int, ...]] = {}
        for cell, codes in grouped.items():
            key = tuple(codes)
            cells[cell] = canonical.setdefault(key, key)
        return cls(slots, cells, resolution=resolution, exit_margin_m=exit_margin_m)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._by_id

    @property
    def cells(self) -> int:
        return len(self._cells)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def exit_margin_m(self) -> float:
        return self._exit_margin_m

    def fences(self) -> list[Fence]:
        return [s.fence for s in self._slots]

    def fence(self, fence_id: str) -> Fence:
        return self._slots[self._by_id[fence_id]].fence

    def revision(self, fence_id: str) -> str:
        return self._slots[self._by_id[fence_id]].revision

    def distance_m(self, fence_id: str, lat: float, lng: float) -> float:
        """Metres from the point to the fence grown by its margin (0.0 inside)."""
        return self._slots[self._by_id[fence_id]].distance_m(lat, lng)

    def inside(self, lat: float, lng: float) -> list[str]:
        """Ids of the fences (grown by their margin, boundary included) holding the point."""
        codes = self._cells.get(h3.latlng_to_cell(lat, lng, self._resolution))
        if codes is None:
            return []
        found = []
        for code in codes:
            kind = code & _KIND_MASK
            if kind == BAND:
                continue
            slot = self._slots[code >> _KIND_BITS]
            if kind == INTERIOR or slot.contains(lat, lng):
                found.append(slot.fence.id)
        return sorted(found)

    def near(self, lat: float, lng: float) -> dict[str, float]:
        """Fences whose cover (grown by the exit margin) holds the point's cell, with the
        point's ``distance_m`` to each."""
        codes = self._cells.get(h3.latlng_to_cell(lat, lng, self._resolution), ())
        out: dict[str, float] = {}
        for code in codes:
            slot = self._slots[code >> _KIND_BITS]
            interior = code & _KIND_MASK == INTERIOR
            out[slot.fence.id] = 0.0 if interior else slot.distance_m(lat, lng)
        return out

    def inside_many(self, lats: FloatArray, lngs: FloatArray) -> list[list[str]]:
        """:meth:`inside` for many points; the exact tests run vectorised per fence."""
        lat_list, lng_list = np.asarray(lats).tolist(), np.asarray(lngs).tolist()
        get, to_cell, res = self._cells.get, h3.latlng_to_cell, self._resolution
        hits = [get(to_cell(a, b, res)) for a, b in zip(lat_list, lng_list, strict=True)]
        found: list[list[int]] = [[] for _ in hits]
        pending: defaultdict[int, list[int]] = defaultdict(list)
        for i, codes in enumerate(hits):
            if codes is None:
                continue
            for code in codes:
                kind = code & _KIND_MASK
                if kind == INTERIOR:
                    found[i].append(code >> _KIND_BITS)
                elif kind == EDGE:
                    pending[code >> _KIND_BITS].append(i)
        self._test_pending(pending, np.asarray(lats), np.asarray(lngs), found)
        return [sorted(self._slots[s].fence.id for s in row) if row else [] for row in found]

    def _test_pending(
        self,
        pending: dict[int, list[int]],
        lats: FloatArray,
        lngs: FloatArray,
        found: list[list[int]],
    ) -> None:
        for slot_no, rows in pending.items():
            idx = np.asarray(rows, dtype=np.intp)
            ok = self._slots[slot_no].contains_many(lats[idx], lngs[idx])
            for i in idx[ok].tolist():
                found[i].append(slot_no)


# --- helpers for validating uploads ------------------------------------------------------


def _local_area_m2(geom: Any) -> float:
    if geom.is_empty:
        return 0.0
    min_lng, min_lat, max_lng, max_lat = shapely.bounds(geom)
    plane = _planar((min_lat + max_lat) / 2.0, (min_lng + max_lng) / 2.0)
    return float(shapely.area(shapely.transform(geom, plane)))


def area_m2(geometry: dict[str, Any]) -> float:
    """Area of a (Multi)Polygon GeoJSON geometry in square metres."""
    return _local_area_m2(shapely.force_2d(_geometry_lnglat(geometry)))


def invalid_reason(geometry: dict[str, Any]) -> str | None:
    """shapely's explanation when the (Multi)Polygon is not valid, else None."""
    geom = _geometry_lnglat(geometry)
    if shapely.is_valid(geom):
        return None
    return str(shapely.is_valid_reason(geom))


@dataclass(frozen=True, slots=True)
class Repair:
    """The outcome of ``make_valid``: the polygonal result (None if nothing polygonal is
    left) and the area before and after."""

    geometry: dict[str, Any] | None
    area_before_m2: float
    area_after_m2: float
    result_type: str


def repair(geometry: dict[str, Any]) -> Repair:
    geom = shapely.force_2d(_geometry_lnglat(geometry))
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    before, after = _local_area_m2(geom), _local_area_m2(fixed)
    if fixed.is_empty or fixed.geom_type not in ("Polygon", "MultiPolygon"):
        return Repair(None, before, after, fixed.geom_type)
    fixed = shapely.orient_polygons(fixed, exterior_cw=False)
    return Repair(_as_lists(shapely.geometry.mapping(fixed)), before, after, fixed.geom_type)


def _as_lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def overlaps(fences: Sequence[Fence], min_area_m2: float = 0.0) -> list[tuple[str, str, float]]:
    """Pairs of fences whose shapes (without margins) share more than ``min_area_m2``;
    fences that only touch share none."""
    shapes = [_fence_shape_lnglat(f) for f in fences]
    tree = shapely.STRtree(shapes)
    left, right = tree.query(shapes, predicate="intersects")
    out = []
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i >= j:
            continue
        shared = _local_area_m2(shapely.intersection(shapes[i], shapes[j]))
        if shared > min_area_m2:
            out.append((fences[i].id, fences[j].id, shared))
    return out


def _fence_shape_lnglat(fence: Fence) -> Any:
    geom = shapely.force_2d(_geometry_lnglat(fence.geometry))
    if fence.geometry["type"] != "Point":
        return geom
    lat0, lng0 = geom.y, geom.x
    disc = shapely.buffer(shapely.Point(0.0, 0.0), float(fence.radius_m or 0.0), quad_segs=16)
    return shapely.transform(disc, _unplanar(lat0, lng0))

"""The fence index: which fences hold a point, and how far the nearby ones are, fast.

Twin of :func:`geofence.domain.geometry.lookup` (and of ``FenceShape.holds`` /
``FenceShape.distance_m`` for one fence): the same answers, from an H3 cover and
vectorised shapely calls instead of testing every fence. Each fence lives in its own
local metric plane (:func:`geofence.domain.geometry.to_plane`), so inside/outside and
``distance_m`` are computed on the exact shape, never on the H3 approximation.

The H3 cover is only a candidate filter. Every cell within ``margin_m + exit_margin_m`` of
a fence is indexed with one of three kinds:

- interior: the whole hexagon lies inside the fence grown by ``margin_m`` (answered
  without geometry);
- edge: the hexagon touches the grown fence (one exact test);
- band: the hexagon only reaches the hysteresis band (reported by ``near``).

``inside_pairs`` (and so ``inside_many``) finds its candidates for many points in a grid
of the fences' grown lat/lng boxes instead: no H3 lookup per point. The fences are held
as a :class:`geofence.engine.fences.FenceTable` (a million fit in a process).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import shapely
from h3.api import basic_int as h3
from h3.api import numpy_int as h3_arrays

from geofence.domain.geometry import to_plane, to_plane_many
from geofence.domain.model import Fence
from geofence.engine import ufuncs
from geofence.engine.fences import POINT, FenceTable

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.integer[Any]]
BoolArray = npt.NDArray[np.bool_]

_SLACK_M: Final = 0.05  # cell classification keeps this far from any boundary

INTERIOR: Final = 0
EDGE: Final = 1
BAND: Final = 2
_KIND_BITS: Final = 2
_KIND_MASK: Final = (1 << _KIND_BITS) - 1
_NO_CELL: Final = np.iinfo(np.int64).max  # above every H3 cell: the top bit is always 0
_COVER_CHUNK: Final = 32_768  # fences whose cover is classified at once
# one-point lookups find a cell by a dict up to this many cells, above by a binary search:
# the dict costs about 100 bytes a cell
_DICT_CELLS_AT_MOST: Final = 1 << 19


# --- one fence in its plane --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    """A fence prepared for tests one point at a time (``_SlotArrays.slot``): ``base`` is
    the polygon, or the centre of a circle whose radius is ``offset_m``. The fence is
    everything within ``offset_m + margin_m`` of base."""

    fence_id: str
    lat0: float
    lng0: float
    base: Any
    offset_m: float
    margin_m: float
    bbox: tuple[float, float, float, float]  # min_lat, min_lng, max_lat, max_lng, grown

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
        # the ufuncs themselves: the public wrappers' argument handling costs as much again
        return ufuncs.distance(self.base, ufuncs.point(x, y))

    def in_box(self, lat: float, lng: float) -> bool:
        """Whether the point lies in the grown bounding box (``_SlotArrays.in_box``)."""
        b = self.bbox
        return b[0] <= lat <= b[2] and b[1] <= lng <= b[3]

    def contains(self, lat: float, lng: float) -> bool:
        if not self.in_box(lat, lng):
            return False
        x, y = to_plane(self.lat0, self.lng0, lat, lng)
        if self.is_circle:
            return math.hypot(x, y) <= self.reach_m
        if self.margin_m == 0.0:
            # the ufunc itself: the public wrapper's argument handling costs 3× the test
            return ufuncs.intersects_xy(self.base, x, y)
        return ufuncs.dwithin(self.base, ufuncs.point(x, y), self.margin_m)

    def distance_m(self, lat: float, lng: float) -> float:
        return max(0.0, self.raw_distance(lat, lng) - self.reach_m)


def _grown_bboxes(
    min_lat: FloatArray,
    min_lng: FloatArray,
    max_lat: FloatArray,
    max_lng: FloatArray,
    grow_m: FloatArray,
) -> FloatArray:
    """(n, 4) lat/lng boxes holding every point within ``grow_m`` (+1 m) of the given boxes.

    A degree of latitude is at least 110.5 km and of longitude at least 111.3 km·cos φ
    on WGS 84, so dividing by 110 km over-grows a box, never under-grows it. Near a pole,
    or where a box would wrap around the antimeridian, it does not filter on longitude.
    """
    d_lat = (grow_m + 1.0) / 110_000.0
    low, high = np.maximum(min_lat - d_lat, -90.0), np.minimum(max_lat + d_lat, 90.0)
    cos_lat = np.cos(np.radians(np.maximum(np.abs(low), np.abs(high))))
    polar = cos_lat < 1e-3
    d_lng = (grow_m + 1.0) / (110_000.0 * np.where(polar, 1.0, cos_lat))
    lng_lo, lng_hi = min_lng - d_lng, max_lng + d_lng
    open_lng = polar | (lng_lo < -180.0) | (lng_hi > 180.0)
    lng_lo[open_lng], lng_hi[open_lng] = -math.inf, math.inf
    return np.column_stack((low, lng_lo, high, lng_hi))


def _polygons(table: FenceTable, xs: FloatArray, ys: FloatArray, polygonal: BoolArray) -> Any:
    """The (Multi)Polygons of the polygonal fences from their vertices in their planes,
    in a few vectorised calls; a fence of one part is a Polygon."""
    ring_sizes = np.diff(table.ring_offsets)
    rings_per_part = np.diff(table.part_offsets)
    parts_per_fence = np.diff(table.fence_offsets)
    part_fence = np.repeat(np.arange(len(table)), parts_per_fence)
    ring_fence = np.repeat(part_fence, rings_per_part)
    kept_rings = polygonal[ring_fence]
    kept_vertices = np.repeat(kept_rings, ring_sizes)
    sizes = ring_sizes[kept_rings]
    rings = shapely.linearrings(
        xs[kept_vertices], ys[kept_vertices], indices=np.repeat(np.arange(len(sizes)), sizes)
    )
    per_part = rings_per_part[polygonal[part_fence]]
    parts = shapely.polygons(rings, indices=np.repeat(np.arange(len(per_part)), per_part))
    del rings
    per_fence = parts_per_fence[polygonal]
    first_part = np.cumsum(per_fence) - per_fence
    out = parts[first_part]
    several = (per_fence > 1).nonzero()[0]
    if len(several):
        counts = per_fence[several]
        picked = np.repeat(first_part[several] - np.cumsum(counts) + counts, counts)
        picked += np.arange(len(picked))
        out[several] = shapely.multipolygons(
            parts[picked], indices=np.repeat(np.arange(len(several)), counts)
        )
    return out


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


def _cell_centres(cells: IntArray) -> tuple[FloatArray, FloatArray]:
    """Latitudes and longitudes of the cells' centres."""
    pairs = chain.from_iterable(map(h3.cell_to_latlng, cells.tolist()))
    flat = np.fromiter(pairs, dtype=np.float64, count=2 * len(cells))
    return flat[0::2], flat[1::2]


def _cells_of(lats: FloatArray, lngs: FloatArray, resolution: int) -> IntArray:
    """The H3 cell of each point."""
    cells = map(h3.latlng_to_cell, lats.tolist(), lngs.tolist(), repeat(resolution))
    return np.fromiter(cells, dtype=np.int64, count=len(lats))


class _Cover:
    """Builds the cover of many fences, a few tens of thousands at a time, so the geometry
    runs vectorised and its temporary arrays stay small."""

    def __init__(self, vectors: _SlotArrays, exit_margin_m: float, resolution: int) -> None:
        self.vectors = vectors
        self.boxes = shapely.bounds(vectors.base)  # in each fence's plane
        self.exit_margin_m = exit_margin_m
        self.resolution = resolution
        self._radius: dict[int, float] = {}

    def radius_m(self, cell: int) -> float:
        parent = h3.cell_to_parent(cell, min(self.resolution, 5))
        if parent not in self._radius:
            self._radius[parent] = _circumradius_m(cell)
        return self._radius[parent]

    @property
    def max_radius_m(self) -> float:
        return max(self._radius.values(), default=0.0)

    def candidates(self, lat0: float, lng0: float, far_m: float) -> tuple[IntArray, float]:
        """Every cell whose centre may lie within ``far_m`` (the fence's extent, reach and
        exit margin) + one circumradius of the fence's origin."""
        centre = h3.latlng_to_cell(lat0, lng0, self.resolution)
        radius = self.radius_m(centre)
        far = far_m + 2.0 * radius
        # Ring k holds every cell whose centre is within 1.5·k·edge of the centre cell's.
        k = math.ceil(far / (1.5 * radius / 1.1))
        return h3_arrays.grid_disk(centre, k).astype(np.int64), radius

    def run(self) -> _CellTable:
        """The table of every cell that the cover keeps, with its fences' kinds."""
        v = self.vectors
        far = (v.extent + v.reach + self.exit_margin_m).tolist()
        lat0, lng0 = v.lat0.tolist(), v.lng0.tolist()
        kept: list[tuple[IntArray, IntArray, IntArray]] = []
        for start in range(0, len(far), _COVER_CHUNK):
            chunk = range(start, min(start + _COVER_CHUNK, len(far)))
            found = [self.candidates(lat0[i], lng0[i], far[i]) for i in chunk]
            counts = [len(cells) for cells, _ in found]
            cells = np.concatenate([c for c, _ in found])
            owner = np.repeat(np.arange(chunk.start, chunk.stop), counts)
            radius = np.repeat(np.asarray([r for _, r in found], dtype=np.float64), counts)
            kinds = self.classify(cells, owner, radius)
            keep = kinds >= 0
            kept.append((cells[keep], owner[keep], kinds[keep]))
        if not kept:
            return _CellTable.build(*(np.zeros(0, dtype=np.int64) for _ in range(3)))
        return _CellTable.build(*(np.concatenate(parts) for parts in zip(*kept, strict=True)))

    def classify(self, cells: IntArray, owner: IntArray, r: FloatArray) -> IntArray:
        xs, ys = self.centres(cells, owner)
        reach = self.vectors.reach[owner]
        dist, depth = self.centre_distances(
            owner, xs, ys, reach + self.exit_margin_m + r, beyond=reach + r
        )
        interior = (dist + r <= reach) | (depth >= r)
        edge = dist <= reach + r
        band = dist <= reach + self.exit_margin_m + r
        return np.where(interior, INTERIOR, np.where(edge, EDGE, np.where(band, BAND, -1)))

    def centres(self, cells: IntArray, owner: IntArray) -> tuple[FloatArray, FloatArray]:
        """Each cell's centre in the plane of its fence."""
        unique, inverse = np.unique(cells, return_inverse=True)
        lats, lngs = _cell_centres(unique)
        v = self.vectors
        return to_plane_many(v.lat0[owner], v.lng0[owner], lats[inverse], lngs[inverse])

    def centre_distances(
        self,
        owner: IntArray,
        xs: FloatArray,
        ys: FloatArray,
        within: FloatArray,
        *,
        beyond: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Per pair: metres from the cell centre to ``base``, and how deep inside it is.

        The distance to the fence's box stands in for the fence's (it is less) where it
        decides as well: beyond ``within`` (too far for the cell to be kept), and beyond
        ``beyond`` when the fence is surely within ``within`` (a band cell either way).
        """
        v = self.vectors
        box = np.take(self.boxes, owner, axis=0)  # rows by index: 10× faster than box[owner]
        dx = np.maximum(box[:, 0] - xs, 0.0) + np.maximum(xs - box[:, 2], 0.0)
        dy = np.maximum(box[:, 1] - ys, 0.0) + np.maximum(ys - box[:, 3], 0.0)
        outside = np.hypot(dx, dy)
        close = outside <= within
        maybe = (close & (outside > beyond)).nonzero()[0]
        close[maybe[_at_most(box[maybe], xs[maybe], ys[maybe]) <= within[maybe]]] = False
        close = close.nonzero()[0]
        outside[close] = v.raw_distances(owner[close], xs[close], ys[close])
        depth = np.zeros_like(outside)
        inner = ((outside == 0.0) & ~v.circle[owner]).nonzero()[0]
        depth[inner] = v.depths(owner[inner], xs[inner], ys[inner])
        return outside, depth


def _at_most(box: FloatArray, xs: FloatArray, ys: FloatArray) -> FloatArray:
    """A bound on the metres from each point to a shape that touches every side of its
    box: the far end of the nearest side."""
    far_x = np.maximum(np.abs(xs - box[:, 0]), np.abs(xs - box[:, 2]))
    far_y = np.maximum(np.abs(ys - box[:, 1]), np.abs(ys - box[:, 3]))
    near_x = np.minimum(np.abs(xs - box[:, 0]), np.abs(xs - box[:, 2]))
    near_y = np.minimum(np.abs(ys - box[:, 1]), np.abs(ys - box[:, 3]))
    return np.minimum(np.hypot(near_x, far_y), np.hypot(far_x, near_y))


class _CellTable:
    """The indexed cells in ascending order and the fences each lists.

    A fence is listed as a code, ``slot << _KIND_BITS | kind``. Cell ``i`` lists ``held[i]``
    interior or edge codes from ``codes[first[i]]`` on, then band codes up to ``listed[i]``
    in all. A last cell that no point falls in, listing nothing, ends the arrays, so a
    search never runs off them.
    """

    __slots__ = ("_at", "_views", "cells", "codes", "first", "held", "listed")

    def __init__(self, cells: IntArray, held: IntArray, listed: IntArray, codes: IntArray) -> None:
        self.cells, self.held, self.listed, self.codes = cells, held, listed, codes
        self.first = np.cumsum(listed, dtype=np.int32) - listed
        # one-point lookups probe a dict and slice these: a numpy call per point costs more
        few = len(cells) <= _DICT_CELLS_AT_MOST
        self._at = {cell: i for i, cell in enumerate(cells[:-1].tolist())} if few else None
        self._views = tuple(a.data for a in (self.first, held, listed, codes))

    @classmethod
    def build(cls, cells: IntArray, slots: IntArray, kinds: IntArray) -> _CellTable:
        """From the (cell, slot, kind) of every pair the cover keeps."""
        order = np.lexsort((slots, kinds, cells))
        cells, slots, kinds = cells[order], slots[order], kinds[order]
        unique, which = np.unique(np.append(cells, _NO_CELL), return_inverse=True)
        listed = np.bincount(which[:-1], minlength=len(unique)).astype(np.int32)
        held = np.bincount(which[:-1], kinds != BAND, minlength=len(unique)).astype(np.int32)
        return cls(unique, held, listed, (slots << _KIND_BITS | kinds).astype(np.int32))

    def __len__(self) -> int:
        return len(self.cells) - 1

    def codes_of(self, cell: int, *, band: bool) -> Sequence[int]:
        """The codes the cell lists, the band ones only with ``band``."""
        at = self._at.get(cell) if self._at is not None else self._search(cell)
        if at is None:
            return ()
        first, held, listed, codes = self._views
        start = first[at]
        return codes[start : start + (listed[at] if band else held[at])].tolist()

    def _search(self, cell: int) -> int | None:
        at = int(np.searchsorted(self.cells, cell))
        return at if at < len(self.cells) - 1 and int(self.cells[at]) == cell else None

    def codes_many(self, cells: IntArray, *, band: bool) -> tuple[IntArray, IntArray]:
        """The codes each cell lists, cell after cell, and how many each lists."""
        at = np.searchsorted(self.cells, cells)
        counts = np.where(self.cells[at] == cells, (self.listed if band else self.held)[at], 0)
        ends = np.cumsum(counts)
        start = (self.first[at] - (ends - counts)).repeat(counts)
        return self.codes[np.arange(len(start)) + start], counts


# --- the index ---------------------------------------------------------------------------


class FenceIndex:
    """Which fences hold a point, and how far the nearby ones are.

    ``inside`` costs one H3 lookup and one dict probe (a binary search above
    ``_DICT_CELLS_AT_MOST`` cells) for a point far from every fence, and one exact test per
    fence whose edge crosses the point's cell. The batch lookups do the same for many
    points in a few numpy and shapely calls.
    """

    __slots__ = (
        "_boxes",
        "_coarse",
        "_exit_margin_m",
        "_fences",
        "_ids",
        "_resolution",
        "_slots",
        "_table",
        "_vectors",
    )

    def __init__(
        self,
        fences: FenceTable,
        table: _CellTable,
        coarse: _CoarseGrid,
        vectors: _SlotArrays,
        *,
        resolution: int,
        exit_margin_m: float,
    ) -> None:
        self._fences = fences
        self._table = table
        # one-point lookups make a fence's _Slot the first time they meet it
        self._slots: list[_Slot | None] = [None] * len(fences)
        self._ids = fences.ids
        self._resolution = resolution
        self._exit_margin_m = exit_margin_m
        self._vectors = vectors
        self._coarse = coarse
        self._boxes = _BoxGrid.build(vectors.bbox)
        if not self._ids.unique:
            raise ValueError("fence ids must be unique")

    @classmethod
    def build(
        cls, fences: Iterable[Fence], *, resolution: int = 11, exit_margin_m: float = 30.0
    ) -> FenceIndex:
        return cls.build_table(
            FenceTable.of(fences), resolution=resolution, exit_margin_m=exit_margin_m
        )

    @classmethod
    def build_table(
        cls, fences: FenceTable, *, resolution: int = 11, exit_margin_m: float = 30.0
    ) -> FenceIndex:
        """:meth:`build` from fences already held compactly."""
        vectors = _SlotArrays(fences)
        cover = _Cover(vectors, exit_margin_m, resolution)
        table = cover.run()
        coarse = _CoarseGrid.build(table.cells[:-1], cover.max_radius_m)
        if len(fences.coords) >= _SPILL_FROM_VERTICES:
            fences.spill()  # read again only to give a fence back
        return cls(
            fences, table, coarse, vectors, resolution=resolution, exit_margin_m=exit_margin_m
        )

    def __len__(self) -> int:
        return len(self._fences)

    def __contains__(self, fence_id: object) -> bool:
        return self._ids.find(fence_id) is not None

    @property
    def cells(self) -> int:
        return len(self._table)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def exit_margin_m(self) -> float:
        return self._exit_margin_m

    def fences(self) -> list[Fence]:
        return [self._fences.fence(i) for i in range(len(self._fences))]

    def fence(self, fence_id: str) -> Fence:
        return self._fences.fence(self._ids.number(fence_id))

    def revision(self, fence_id: str) -> str:
        return self._fences.revision(self._ids.number(fence_id))

    def _slot(self, i: int) -> _Slot:
        made = self._slots[i] = self._vectors.slot(i, self._fences.ids[i])
        return made

    def distance_m(self, fence_id: str, lat: float, lng: float) -> float:
        """Metres from the point to the fence grown by its margin (0.0 inside)."""
        i = self._ids.number(fence_id)
        return (self._slots[i] or self._slot(i)).distance_m(lat, lng)

    def inside(self, lat: float, lng: float) -> list[str]:
        """Ids of the fences (grown by their margin, boundary included) holding the point."""
        found = []
        cell = h3.latlng_to_cell(lat, lng, self._resolution)
        slots = self._slots
        for code in self._table.codes_of(cell, band=False):
            i = code >> _KIND_BITS
            slot = slots[i] or self._slot(i)
            if code & _KIND_MASK == INTERIOR or slot.contains(lat, lng):
                found.append(slot.fence_id)
        found.sort()
        return found

    def near(self, lat: float, lng: float, *, band: bool = True) -> dict[str, float]:
        """Fences whose cover (grown by the exit margin) holds the point's cell, with the
        point's ``distance_m`` to each; ``band=False`` as in :meth:`near_many`."""
        out: dict[str, float] = {}
        cell = h3.latlng_to_cell(lat, lng, self._resolution)
        slots = self._slots
        for code in self._table.codes_of(cell, band=band):
            i = code >> _KIND_BITS
            slot = slots[i] or self._slot(i)
            if code & _KIND_MASK == INTERIOR:
                out[slot.fence_id] = 0.0
            elif band or slot.in_box(lat, lng):
                out[slot.fence_id] = slot.distance_m(lat, lng)
        return out

    def distances_m(self, fence_ids: Sequence[str], lats: FloatArray, lngs: FloatArray) -> Any:
        """:meth:`distance_m` of many (fence, point) pairs, as an array: fewer than
        ``DISTANCES_IN_TURN_BELOW`` one at a time, more in one vectorised call."""
        if len(fence_ids) < DISTANCES_IN_TURN_BELOW:
            return self.distances_in_turn(fence_ids, lats, lngs)
        return self.distances_arrays(fence_ids, lats, lngs)

    def distances_in_turn(
        self, fence_ids: Sequence[str], lats: FloatArray, lngs: FloatArray
    ) -> FloatArray:
        """:meth:`distances_m` one pair at a time, whatever their number."""
        pairs = zip(fence_ids, np.asarray(lats).tolist(), np.asarray(lngs).tolist(), strict=True)
        return np.array([self.distance_m(f, lat, lng) for f, lat, lng in pairs], dtype=np.float64)

    def distances_arrays(self, fence_ids: Sequence[str], lats: FloatArray, lngs: FloatArray) -> Any:
        """:meth:`distances_m` in array steps, whatever the number of pairs."""
        slot = np.fromiter((self._ids.number(f) for f in fence_ids), dtype=np.intp, count=len(lats))
        lats, lngs = np.asarray(lats, dtype=np.float64), np.asarray(lngs, dtype=np.float64)
        return self._vectors.distances_m(slot, lats, lngs)

    def _pairs(
        self, lats: FloatArray, lngs: FloatArray, *, band: bool
    ) -> tuple[IntArray, IntArray, IntArray]:
        """(row, slot, kind) of each fence listed in the cell of each point."""
        rows = self._coarse.candidates(lats, lngs)
        cells = _cells_of(lats[rows], lngs[rows], self._resolution)
        codes, counts = self._table.codes_many(cells, band=band)
        return rows.repeat(counts), codes >> _KIND_BITS, codes & _KIND_MASK

    def inside_many(self, lats: FloatArray, lngs: FloatArray) -> list[list[str]]:
        """:meth:`inside` for many points; the exact tests run in a few vectorised calls."""
        rows, numbers = self.inside_pairs(lats, lngs)
        out: list[list[str]] = [[] for _ in range(len(lats))]
        for row, fence_id in zip(rows.tolist(), self._ids.take(numbers), strict=True):
            out[row].append(fence_id)
        return out

    def inside_pairs(self, lats: FloatArray, lngs: FloatArray) -> tuple[IntArray, IntArray]:
        """:meth:`inside_many` as two arrays (as ``STRtree.query`` answers): the row of
        the point and the number of the fence (its place among the fences the index was
        built from) of each (point, fence holding it), point after point, each point's
        fences in the order of their ids."""
        lats, lngs = np.asarray(lats, dtype=np.float64), np.asarray(lngs, dtype=np.float64)
        if self._boxes is not None and len(lats) >= _FEW_POINTS:
            # the fences whose grown box holds the point, each tested: no H3 lookup
            rows, slots = self._boxes.candidates(lats, lngs)
            held = self._vectors.contains(slots, lats[rows], lngs[rows])
        else:
            rows, slots, kinds = self._pairs(lats, lngs, band=False)
            held = kinds == INTERIOR
            edge = (kinds == EDGE).nonzero()[0]
            held[edge] = self._vectors.contains(slots[edge], lats[rows[edge]], lngs[rows[edge]])
        rows, slots = rows[held], slots[held]
        order = np.lexsort((self._ids.rank[slots], rows))  # each point's ids in sorted order
        return rows[order], slots[order]

    def near_many(
        self, lats: FloatArray, lngs: FloatArray, *, band: bool = True
    ) -> list[dict[str, float]]:
        """:meth:`near` for many points; the distances come from one vectorised call.

        ``band=False`` leaves out the fences listed only for the exit band around them,
        and those whose grown bounding box misses the point: what is left holds every
        fence that holds the point, at the same distances, for a fraction of the cost.
        Fewer than ``NEAR_IN_TURN_BELOW`` points go one at a time (:meth:`near`).
        """
        if not band and len(lats) < NEAR_IN_TURN_BELOW:
            return self.near_in_turn(lats, lngs, band=band)
        return self.near_arrays(lats, lngs, band=band)

    def near_in_turn(
        self, lats: FloatArray, lngs: FloatArray, *, band: bool = True
    ) -> list[dict[str, float]]:
        """:meth:`near_many` one point at a time, whatever the number of points."""
        points = zip(np.asarray(lats).tolist(), np.asarray(lngs).tolist(), strict=True)
        return [self.near(lat, lng, band=band) for lat, lng in points]

    def near_arrays(
        self, lats: FloatArray, lngs: FloatArray, *, band: bool = True
    ) -> list[dict[str, float]]:
        """:meth:`near_many` in array steps, whatever the number of points."""
        lats, lngs = np.asarray(lats, dtype=np.float64), np.asarray(lngs, dtype=np.float64)
        rows, slots, kinds = self._pairs(lats, lngs, band=band)
        if not band:
            kept = (kinds == INTERIOR) | self._vectors.in_box(slots, lats[rows], lngs[rows])
            rows, slots, kinds = rows[kept], slots[kept], kinds[kept]
        metres = self._vectors.distances_m(slots, lats[rows], lngs[rows])
        metres[kinds == INTERIOR] = 0.0
        out: list[dict[str, float]] = [{} for _ in range(len(lats))]
        found = zip(rows.tolist(), self._ids.take(slots), metres.tolist(), strict=True)
        for row, fence_id, m in found:
            out[row][fence_id] = m
        return out


_FEW_POINTS: Final = 32
# a table of this many vertices (64 MB) or more moves them to a mapped file once the index
# is built (FenceTable.spill): at a million fences, 300 MB the process no longer holds
_SPILL_FROM_VERTICES: Final = 1 << 22
# near_many without the band: below this many points, one at a time costs less than the
# array steps' fixed cost (``python -m benchmarks.flush``, its lookups table)
NEAR_IN_TURN_BELOW: Final = 32
# distances_m: below this many pairs, one at a time costs less than the array steps (the
# same table's distances)
DISTANCES_IN_TURN_BELOW: Final = 5


class _CoarseGrid:
    """A sorted array of the lat/lng grid squares that touch any indexed cell.

    The batch lookups ask it, in one vectorised step, which points can be near a fence at
    all, and spend an H3 lookup only on those.
    """

    STEP_DEG: ClassVar[float] = 0.002
    COLUMNS: ClassVar[int] = round(360 / 0.002)

    def __init__(self, keys: npt.NDArray[np.int64] | None) -> None:
        self.keys = keys  # None: every point is a candidate

    @classmethod
    def build(cls, cells: IntArray, radius_m: float) -> _CoarseGrid:
        if not len(cells):
            return cls(np.zeros(0, dtype=np.int64))
        lats, lngs = _cell_centres(cells)
        d_lat = (radius_m + 1.0) / 110_000.0
        cos_lat = np.cos(np.radians(np.minimum(np.abs(lats) + d_lat, 90.0)))
        if cos_lat.min() < 0.05:  # near a pole a square spans too many columns
            return cls(None)
        d_lng = d_lat / cos_lat
        i_lo, i_hi = cls.row_of(lats - d_lat), cls.row_of(lats + d_lat)
        j_lo, j_hi = cls.col_of(lngs - d_lng), cls.col_of(lngs + d_lng)
        j_span = (j_hi - j_lo) % cls.COLUMNS
        keys = []
        for di in range(int((i_hi - i_lo).max()) + 1):
            for dj in range(int(j_span.max()) + 1):
                ok = (di <= i_hi - i_lo) & (dj <= j_span)
                keys.append(cls.key(i_lo + di, j_lo + dj)[ok])
        return cls(np.unique(np.concatenate(keys)))

    @classmethod
    def row_of(cls, lats: FloatArray) -> npt.NDArray[np.int64]:
        return np.floor((lats + 90.0) / cls.STEP_DEG).astype(np.int64)

    @classmethod
    def col_of(cls, lngs: FloatArray) -> npt.NDArray[np.int64]:
        return np.floor((lngs + 180.0) / cls.STEP_DEG).astype(np.int64) % cls.COLUMNS

    @classmethod
    def key(cls, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64]) -> Any:
        return rows * cls.COLUMNS + cols % cls.COLUMNS

    def candidates(self, lats: FloatArray, lngs: FloatArray) -> IntArray:
        """Rows of the points that may be near a fence. A few points all go on: the grid's
        numpy steps would cost more than the H3 lookups they spare."""
        if self.keys is None or len(lats) < _FEW_POINTS:
            return np.arange(len(lats))
        if len(self.keys) == 0:
            return np.zeros(0, dtype=np.intp)
        query = self.key(self.row_of(lats), self.col_of(lngs))
        at = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        near: BoolArray = self.keys[at] == query
        return near.nonzero()[0]


class _BoxSquares(_CoarseGrid):
    """The squares of the grid of boxes: finer than the coarse grid's, a shop's box meets
    a few and a point's square lists a fraction of the fences (at a million fences,
    ``python -m benchmarks.million``: 1.7× STRtree with squares of 0.001°, 1.4× with
    0.002°, for 9 MB more)."""

    STEP_DEG: ClassVar[float] = 0.001
    COLUMNS: ClassVar[int] = round(360 / 0.001)


class _BoxGrid:
    """The fences whose grown lat/lng box meets each square of the coarse grid: the
    batch's candidates for ``inside``, found for all points in a few numpy steps. Each
    fence is listed in every square its box meets, so a point's square lists every fence
    whose box holds it; the exact test then decides."""

    MOST_SQUARES: Final = 1 << 12  # a fence whose box meets more: no grid (H3 answers)

    def __init__(self, keys: IntArray, first: IntArray, fences: IntArray) -> None:
        self.keys, self.first, self.fences = keys, first, fences

    @classmethod
    def build(cls, bbox: FloatArray) -> _BoxGrid | None:
        if not len(bbox) or not np.isfinite(bbox).all():
            return None
        grid = _BoxSquares
        i_lo, i_hi = grid.row_of(bbox[:, 0]), grid.row_of(bbox[:, 2])
        j_lo, j_hi = grid.col_of(bbox[:, 1]), grid.col_of(bbox[:, 3])
        rows, cols = i_hi - i_lo + 1, (j_hi - j_lo) % grid.COLUMNS + 1
        squares = rows * cols
        if squares.max() > cls.MOST_SQUARES:
            return None
        fences = np.repeat(np.arange(len(bbox), dtype=np.int32), squares)
        k = np.arange(len(fences)) - np.repeat(np.cumsum(squares) - squares, squares)
        width = cols[fences]
        keys = grid.key(i_lo[fences] + k // width, j_lo[fences] + k % width)
        order = np.argsort(keys, kind="stable")
        keys, fences = keys[order], fences[order]
        unique, first = np.unique(keys, return_index=True)
        ends = np.append(first, len(keys)).astype(np.int64)
        return cls(np.append(unique, _NO_CELL), ends, fences)

    def candidates(self, lats: FloatArray, lngs: FloatArray) -> tuple[IntArray, IntArray]:
        """(row, fence) of every fence listed in each point's square, in no set order."""
        grid = _BoxSquares
        query = grid.key(grid.row_of(lats), grid.col_of(lngs))
        # searched in order, the keys are walked once instead of at random: 3x faster at a
        # million fences, sorting included (the caller orders the pairs it keeps anyway)
        order = np.argsort(query)
        query = query[order]
        at = np.searchsorted(self.keys, query)
        found = self.keys[at] == query
        rows, at = order[found], at[found]
        counts = self.first[at + 1] - self.first[at]
        ends = np.cumsum(counts)
        start = (self.first[at] - (ends - counts)).repeat(counts)
        return rows.repeat(counts), self.fences[np.arange(len(start)) + start]


class _SlotArrays:
    """The fences' numbers as arrays, for testing many (point, fence) pairs at once: each
    fence's plane (its origin ``lat0, lng0``), ``base`` (its polygon in that plane, or the
    centre of its circle of radius ``offset``), margin, reach and grown lat/lng box."""

    def __init__(self, fences: FenceTable) -> None:
        n = len(fences)
        starts, _ = fences.vertex_ranges()
        lngs, lats = fences.coords[:, 0], fences.coords[:, 1]
        low, high = (
            _per_fence(np.minimum, fences.coords, starts),
            _per_fence(np.maximum, fences.coords, starts),
        )
        self.lat0, self.lng0 = (low[:, 1] + high[:, 1]) / 2.0, (low[:, 0] + high[:, 0]) / 2.0
        point = fences.kinds == POINT
        self.offset = np.where(point, np.nan_to_num(fences.radius_m), 0.0)
        self.margin = np.asarray(fences.margin_m, dtype=np.float64)
        self.reach = self.offset + self.margin
        self.circle = self.offset > 0.0
        self.bbox = _grown_bboxes(low[:, 1], low[:, 0], high[:, 1], high[:, 0], self.reach)
        owner = np.repeat(np.arange(n), np.diff(np.append(starts, len(lats))))
        xs, ys = to_plane_many(self.lat0[owner], self.lng0[owner], lats, lngs)
        self.extent = _per_fence(np.maximum, np.hypot(xs, ys), starts) if n else np.zeros(0)
        self.base = np.empty(n, dtype=object)
        self.base[point] = _ORIGIN
        if not point.all():
            polygons = _polygons(fences, xs, ys, ~point)
            shapely.prepare(polygons[shapely.get_num_coordinates(polygons) >= _PREPARED_FROM])
            self.base[~point] = polygons

    def slot(self, i: int, fence_id: str) -> _Slot:
        """Fence ``i`` for tests one point at a time."""
        box = self.bbox[i].tolist()
        return _Slot(
            fence_id,
            float(self.lat0[i]),
            float(self.lng0[i]),
            self.base[i],
            float(self.offset[i]),
            float(self.margin[i]),
            (box[0], box[1], box[2], box[3]),
        )

    def contains(self, slot: IntArray, lats: FloatArray, lngs: FloatArray) -> BoolArray:
        """Whether each point lies in its slot's grown fence (boundary included)."""
        ok = self.in_box(slot, lats, lngs)
        todo = ok.nonzero()[0]
        s = slot[todo]
        xs, ys = to_plane_many(self.lat0[s], self.lng0[s], lats[todo], lngs[todo])
        ok[todo] = self.contains_plane(s, xs, ys)
        return ok

    def in_box(self, slot: IntArray, lats: FloatArray, lngs: FloatArray) -> BoolArray:
        """Whether each point lies in its slot's grown bounding box: a point outside it is
        more than a metre from the grown fence."""
        box = np.take(self.bbox, slot, axis=0)  # as fast as four 1-d gathers, unlike bbox[slot]
        return (box[:, 0] <= lats) & (lats <= box[:, 2]) & (box[:, 1] <= lngs) & (lngs <= box[:, 3])

    def contains_plane(self, slot: IntArray, xs: FloatArray, ys: FloatArray) -> BoolArray:
        """:meth:`contains` of points already in their slots' planes."""
        result = np.empty(len(slot), dtype=bool)
        circle = self.circle[slot]
        result[circle] = np.hypot(xs[circle], ys[circle]) <= self.reach[slot[circle]]
        flat = ~circle & (self.margin[slot] == 0.0)
        result[flat] = shapely.intersects_xy(self.base[slot[flat]], xs[flat], ys[flat])
        grown = (~circle & (self.margin[slot] > 0.0)).nonzero()[0]
        s = slot[grown]
        result[grown] = _with_points(
            shapely.dwithin, self.base[s], xs[grown], ys[grown], self.margin[s]
        )
        return result

    def distances_m(self, slot: IntArray, lats: FloatArray, lngs: FloatArray) -> FloatArray:
        """Metres from each point to its slot's grown fence (0.0 inside): ``distance_m``."""
        xs, ys = to_plane_many(self.lat0[slot], self.lng0[slot], lats, lngs)
        return np.maximum(0.0, self.raw_distances(slot, xs, ys) - self.reach[slot])

    def raw_distances(self, slot: IntArray, xs: FloatArray, ys: FloatArray) -> FloatArray:
        """Metres from each point of its slot's plane to ``base`` (0 inside a polygon)."""
        raw = np.hypot(xs, ys)
        polygon = (~self.circle[slot]).nonzero()[0]
        raw[polygon] = _with_points(
            shapely.distance, self.base[slot[polygon]], xs[polygon], ys[polygon]
        )
        return raw

    def depths(self, slot: IntArray, xs: FloatArray, ys: FloatArray) -> FloatArray:
        """Metres from each point of its slot's plane to the boundary of the polygon."""
        used, which = np.unique(slot, return_inverse=True)
        boundaries = shapely.boundary(self.base[used])[which]
        return np.asarray(_with_points(shapely.distance, boundaries, xs, ys), dtype=np.float64)


_POINTS_AT_ONCE: Final = 512
# Polygons of fewer vertices are tested as they are: a prepared one costs about 150 bytes
# more, and more again once used (its index of edges, made in whichever worker asks),
# which pays only for many vertices
_PREPARED_FROM: Final = 32
_ORIGIN: Final = shapely.Point(0.0, 0.0)


def _per_fence(reduce: np.ufunc, values: Any, starts: IntArray) -> Any:
    """``reduce`` over each fence's vertices (each fence has one at least)."""
    if not len(starts):
        return np.zeros((0, *values.shape[1:]))
    return reduce.reduceat(values, starts, axis=0)


def _with_points(test: Any, shapes: Any, xs: FloatArray, ys: FloatArray, *args: Any) -> Any:
    """``test(shapes, points(xs, ys), *args)``, making the points a few hundred at a time.

    shapely's points are objects the garbage collector tracks: a million of them alive at
    once set off collection after collection of the whole heap, which costs several times
    more than making them.
    """
    parts = []
    for start in range(0, max(len(xs), 1), _POINTS_AT_ONCE):
        part = slice(start, start + _POINTS_AT_ONCE)
        points = shapely.points(np.column_stack((xs[part], ys[part])))
        parts.append(test(shapes[part], points, *(a[part] for a in args)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

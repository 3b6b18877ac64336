"""Many fences held compactly, for the fence index: a million stores' Fence structs, with
their GeoJSON geometry as nested Python lists, would take several gigabytes.

Every vertex lives in one (n, 2) lng/lat array, cut into rings, parts and fences by
offsets (shapely's ragged layout); a Point fence is one part of one ring of one vertex.
What else a fence carries (name, tags, time zone, dwell, properties) is kept encoded,
each distinct value once. :meth:`FenceTable.fence` makes the ``Fence`` again when it is
asked for: equal to the one given (a position given as integers comes back as floats,
which compare equal; a position with an altitude keeps its fence whole).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from geofence.domain.model import Fence

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

POLYGON: Final = 0
MULTIPOLYGON: Final = 1
POINT: Final = 2
_TYPES: Final = ("Polygon", "MultiPolygon", "Point")


class _Rest(msgspec.Struct, frozen=True, array_like=True):
    """A fence but its id and shape."""

    name: str | None
    tags: tuple[str, ...]
    timezone: str
    dwell_s: float | None
    properties: dict[str, Any]


_ENCODE: Final = msgspec.json.Encoder()  # as the properties came: JSON
_DECODE: Final = msgspec.json.Decoder(_Rest)
_DEFAULT_REST: Final = _ENCODE.encode(_Rest(None, (), "Europe/Helsinki", None, {}))


class FenceTable:
    """Fences as arrays. ``coords[ring_offsets[r]:ring_offsets[r + 1]]`` is ring ``r``;
    part ``p`` is rings ``part_offsets[p]`` to ``part_offsets[p + 1]``; fence ``i`` is
    parts ``fence_offsets[i]`` to ``fence_offsets[i + 1]``."""

    __slots__ = (
        "_rest_of",
        "_rests",
        "_revisions",
        "_whole",
        "coords",
        "fence_offsets",
        "ids",
        "kinds",
        "margin_m",
        "part_offsets",
        "radius_m",
        "ring_offsets",
    )

    def __init__(  # noqa: PLR0913
        self,
        ids: Sequence[str],
        coords: FloatArray,
        ring_offsets: IntArray,
        part_offsets: IntArray,
        fence_offsets: IntArray,
        *,
        kinds: npt.NDArray[np.int8] | None = None,
        radius_m: FloatArray | None = None,
        margin_m: FloatArray | None = None,
        rests: Sequence[bytes] = (_DEFAULT_REST,),
        rest_of: npt.NDArray[np.int32] | None = None,
        revisions: list[str | None] | None = None,
        whole: dict[int, Fence] | None = None,
    ) -> None:
        """Polygons with the defaults of ``Fence`` unless told otherwise; ``rest_of[i]``
        picks fence ``i``'s encoded rest among ``rests``."""
        n = len(ids)
        self.ids = list(ids)
        self.coords = np.ascontiguousarray(coords, dtype=np.float64).reshape(-1, 2)
        self.ring_offsets = np.asarray(ring_offsets, dtype=np.int64)
        self.part_offsets = np.asarray(part_offsets, dtype=np.int64)
        self.fence_offsets = np.asarray(fence_offsets, dtype=np.int64)
        self.kinds = np.zeros(n, dtype=np.int8) if kinds is None else kinds
        self.radius_m = np.full(n, np.nan) if radius_m is None else radius_m
        self.margin_m = np.zeros(n) if margin_m is None else margin_m
        self._rests = list(rests)
        self._rest_of = np.zeros(n, dtype=np.int32) if rest_of is None else rest_of
        self._revisions: list[str | None] = [None] * n if revisions is None else revisions
        self._whole = whole or {}
        if len(self.fence_offsets) != n + 1:
            raise ValueError("one fence offset per fence, and one more")

    @classmethod
    def of(cls, fences: Iterable[Fence]) -> FenceTable:
        """The fences given, in their order."""
        return _Packer().pack(fences)

    def __len__(self) -> int:
        return len(self.ids)

    def vertex_ranges(self) -> tuple[IntArray, IntArray]:
        """Where each fence's vertices start and end in ``coords``."""
        rings = self.part_offsets[self.fence_offsets]
        vertices = self.ring_offsets[rings]
        return vertices[:-1], vertices[1:]

    def revision(self, i: int) -> str:
        known = self._revisions[i]
        if known is None:
            known = self._revisions[i] = self.fence(i).revision
        return known

    def fence(self, i: int) -> Fence:
        """Fence ``i`` as it was given."""
        whole = self._whole.get(i)
        if whole is not None:
            return whole
        rest = _DECODE.decode(self._rests[self._rest_of[i]])
        radius = float(self.radius_m[i])
        return Fence(
            id=self.ids[i],
            geometry=self.geometry(i),
            name=rest.name,
            tags=rest.tags,
            timezone=rest.timezone,
            margin_m=float(self.margin_m[i]),
            dwell_s=rest.dwell_s,
            radius_m=None if math.isnan(radius) else radius,  # NaN: none given
            properties=rest.properties,
        )

    def geometry(self, i: int) -> dict[str, Any]:
        """Fence ``i``'s GeoJSON geometry."""
        kind = int(self.kinds[i])
        parts = [
            [
                self.coords[self.ring_offsets[r] : self.ring_offsets[r + 1]].tolist()
                for r in range(self.part_offsets[p], self.part_offsets[p + 1])
            ]
            for p in range(self.fence_offsets[i], self.fence_offsets[i + 1])
        ]
        if kind == POINT:
            return {"type": "Point", "coordinates": parts[0][0][0]}
        return {"type": _TYPES[kind], "coordinates": parts[0] if kind == POLYGON else parts}


class _Packer:
    """Fences into a table, one pass."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rings: list[FloatArray] = []
        self.rings_per_part: list[int] = []
        self.parts_per_fence: list[int] = []
        self.kinds: list[int] = []
        self.radius: list[float] = []
        self.margin: list[float] = []
        self.revisions: list[str | None] = []
        self.rest_of: list[int] = []
        self.rests: dict[bytes, int] = {_DEFAULT_REST: 0}
        self.whole: dict[int, Fence] = {}

    def pack(self, fences: Iterable[Fence]) -> FenceTable:
        for fence in fences:
            self.add(fence)
        ring_sizes = np.fromiter(map(len, self.rings), dtype=np.int64, count=len(self.rings))
        coords = np.concatenate(self.rings) if self.rings else np.zeros((0, 2))
        return FenceTable(
            self.ids,
            coords,
            _offsets(ring_sizes),
            _offsets(np.asarray(self.rings_per_part, dtype=np.int64)),
            _offsets(np.asarray(self.parts_per_fence, dtype=np.int64)),
            kinds=np.asarray(self.kinds, dtype=np.int8),
            radius_m=np.asarray(self.radius, dtype=np.float64),
            margin_m=np.asarray(self.margin, dtype=np.float64),
            rests=list(self.rests),
            rest_of=np.asarray(self.rest_of, dtype=np.int32),
            revisions=self.revisions,
            whole=self.whole,
        )

    def add(self, fence: Fence) -> None:
        geometry = fence.geometry
        kind = _TYPES.index(geometry["type"])
        coordinates = geometry["coordinates"]
        parts = (
            [[[coordinates]]]
            if kind == POINT
            else [coordinates]
            if kind == POLYGON
            else coordinates
        )
        flat = all(len(p) == 2 for rings in parts for ring in rings for p in ring)
        if not flat:
            self.whole[len(self.ids)] = fence
        for rings in parts:
            for ring in rings:
                kept = ring if flat else [p[:2] for p in ring]
                self.rings.append(np.asarray(kept, dtype=np.float64).reshape(-1, 2))
            self.rings_per_part.append(len(rings))
        self.parts_per_fence.append(len(parts))
        self.ids.append(fence.id)
        self.kinds.append(kind)
        self.radius.append(np.nan if fence.radius_m is None else float(fence.radius_m))
        self.margin.append(float(fence.margin_m))
        self.revisions.append(fence.revision)
        rest = _ENCODE.encode(
            _Rest(fence.name, fence.tags, fence.timezone, fence.dwell_s, fence.properties)
        )
        self.rest_of.append(self.rests.setdefault(rest, len(self.rests)))


def _offsets(sizes: IntArray) -> IntArray:
    out = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=out[1:])
    return out

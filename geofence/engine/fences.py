"""Many fences held compactly, for the fence index: a million stores' Fence structs, with
their GeoJSON geometry as nested Python lists, would take several gigabytes.

Every vertex lives in one (n, 2) lng/lat array, cut into rings, parts and fences by
offsets (shapely's ragged layout); a Point fence is one part of one ring of one vertex.
What else a fence carries (name, tags, time zone, dwell, properties) is kept encoded,
each distinct value once, and the ids as :class:`FenceIds` (their bytes end to end).
:meth:`FenceTable.fence` makes the ``Fence`` again when it is asked for: equal to the one
given (a position given as integers comes back as floats, which compare equal; a position
with an altitude keeps its fence whole). Once an index is built from a big table it moves
the vertices to a mapped file (:meth:`FenceTable.spill`): only ``fence`` reads them then.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
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
DICT_IDS: Final = 65_536  # fewer ids than this are also found by a dict (a few MB at most)


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


class FenceIds(Sequence[str]):
    """Many fence ids held compactly: their UTF-8 bytes end to end, cut by offsets, with
    their CRC-32s in ascending order to find one by. A million ids take about 30 MB, where
    strings in a list, an array and a dict take about 130.

    ``rank[i]`` is id ``i``'s place among the ids in sorted order (UTF-8 bytes sort as the
    strings do). Up to ``DICT_IDS`` ids a dict finds one too (a probe, where the CRC and
    the binary search take a few µs: the single ping asks by id for each open visit).
    """

    __slots__ = ("_blob", "_by_crc", "_crcs", "_ends", "_numbers", "rank", "unique")

    def __init__(self, ids: Iterable[str]) -> None:
        encoded = [fence_id.encode() for fence_id in ids]
        n = len(encoded)
        self._blob = b"".join(encoded)
        self._ends = _offsets(np.fromiter(map(len, encoded), dtype=np.int64, count=n))
        crcs = np.fromiter(map(zlib.crc32, encoded), dtype=np.uint32, count=n)
        self._by_crc = np.argsort(crcs, kind="stable").astype(np.int32)
        self._crcs = crcs[self._by_crc]
        order = sorted(range(n), key=encoded.__getitem__)
        self.unique = all(encoded[a] != encoded[b] for a, b in pairwise(order))
        self.rank = np.empty(n, dtype=np.int32)
        self.rank[np.asarray(order, dtype=np.int64)] = np.arange(n, dtype=np.int32)
        self._numbers: dict[bytes, int] | None = None
        if n <= DICT_IDS:
            self._numbers = {e: i for i, e in reversed(list(enumerate(encoded)))}

    def __len__(self) -> int:
        return len(self._ends) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        ends = self._ends
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return self._blob[ends[i] : ends[i + 1]].decode()

    def take(self, numbers: npt.NDArray[np.integer[Any]]) -> list[str]:
        """The ids of the fences numbered, in their order."""
        starts, stops = self._ends[numbers].tolist(), self._ends[numbers + 1].tolist()
        blob = self._blob
        return [blob[a:b].decode() for a, b in zip(starts, stops, strict=True)]

    def find(self, fence_id: object) -> int | None:
        """The number of the fence of this id, or None."""
        if not isinstance(fence_id, str):
            return None
        encoded = fence_id.encode()
        if self._numbers is not None:
            return self._numbers.get(encoded)
        crc = zlib.crc32(encoded)
        at = int(np.searchsorted(self._crcs, crc))
        while at < len(self._crcs) and int(self._crcs[at]) == crc:
            i = int(self._by_crc[at])
            if self._blob[self._ends[i] : self._ends[i + 1]] == encoded:
                return i
            at += 1
        return None

    def number(self, fence_id: str) -> int:
        """:meth:`find`, raising ``KeyError`` for an unknown id."""
        i = self.find(fence_id)
        if i is None:
            raise KeyError(fence_id)
        return i


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
        ids: Iterable[str],
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
        self.ids = ids if isinstance(ids, FenceIds) else FenceIds(ids)
        n = len(self.ids)
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

    @property
    def spilled(self) -> bool:
        """Whether the vertices are in a mapped file (:meth:`spill`)."""
        owner: Any = self.coords
        while isinstance(owner, np.ndarray | memoryview):
            owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
        return isinstance(owner, mmap.mmap)

    def spill(self, directory: str | None = None) -> None:
        """Moves the vertices into a file of their own, mapped read-only and unlinked at
        once (it goes when the last process mapping it does; forked workers share it).

        Once a fence index is built the vertices are read only to give a ``Fence`` back
        (:meth:`fence`, rare): mapped, they take no memory of the process until read, and
        the kernel may drop the pages read again, as it does any file's. A table that was
        spilled already, or has no vertices, is left as it is.
        """
        if not len(self.coords) or self.spilled:
            return
        fd, path = tempfile.mkstemp(prefix="fence-vertices-", dir=directory)
        try:
            Path(path).unlink()
            with os.fdopen(os.dup(fd), "wb") as file:
                self.coords.tofile(file)
            mapped = mmap.mmap(fd, self.coords.nbytes, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.coords = np.frombuffer(mapped, dtype=np.float64).reshape(-1, 2)

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

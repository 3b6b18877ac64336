"""What replacing the catalogue would do, and the guards on it.

- ``diff``: the ids added, changed and removed.
- The shrink guard: an upload that would remove more than half of the current catalogue
  (all of it included) is refused unless the caller allows it (``?allow_shrink=true``).
- Likely swapped latitude and longitude, told without a configured region:

  ``catalogue-moved``      the new catalogue's extent has its centre more than
                           ``MOVE_KM`` from the current catalogue's;
  ``swapped-coordinates``  one store whose position with lng and lat exchanged falls in the
                           current catalogue's extent (grown by ``SLACK_KM``) while its
                           position as given does not; on an empty catalogue, a store
                           whose exchanged position falls in the extent of the rest of the
                           upload while it lies more than ``MOVE_KM`` from that extent.

  A store's position is the centre of its bounding box. A real upload with one of these
  warnings needs ``?confirm_move=true``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from geofence.domain.errors import CatalogueShrink, ConfirmMove
from geofence.domain.model import Fence
from geofence.domain.screening import haversine_m

Warning_ = dict[str, Any]

MOVE_KM: Final = 1000.0
SLACK_KM: Final = 50.0
SHRINK: Final = "catalogue-shrink"
MOVED: Final = "catalogue-moved"
SWAPPED: Final = "swapped-coordinates"
NEEDS_CONFIRM_MOVE: Final = frozenset({MOVED, SWAPPED})
_NAMED: Final = 20  # ids named in one catalogue-moved warning
_KM_PER_DEG_LAT: Final = 110.0  # at least 110.5 km on WGS 84: growing by it over-grows


def diff(old: Sequence[Fence], new: Sequence[Fence]) -> dict[str, list[str]]:
    before = {f.id: f for f in old}
    after = {f.id: f for f in new}
    return {
        "added": sorted(after.keys() - before.keys()),
        "changed": sorted(k for k in after.keys() & before.keys() if after[k] != before[k]),
        "removed": sorted(before.keys() - after.keys()),
    }


def replace_report(current: Sequence[Fence], new: Sequence[Fence]) -> dict[str, Any]:
    """What replacing ``current`` by ``new`` does, with the warnings the guards read
    (the caller adds the version, the cells and the upload's own warnings)."""
    changes = diff(current, new)
    removed, of = len(changes["removed"]), len(current)
    return {
        "stores": len(new),
        **changes,
        "shrink": {"removed": removed, "of": of},
        "warnings": shrink_warnings(removed, of) + move_warnings(current, new),
    }


def check_guards(report: dict[str, Any], *, allow_shrink: bool, confirm_move: bool) -> None:
    """Refuse a real upload the guards hold back, unless the caller allowed it."""
    shrink = report.get("shrink")
    if shrink and not allow_shrink and shrink_refused(shrink["removed"], shrink["of"]):
        detail = (
            f"The upload would remove {shrink['removed']} of the {shrink['of']} stores; "
            "send it again with ?allow_shrink=true if that is meant."
        )
        raise CatalogueShrink(detail, report)
    moved = [w for w in report["warnings"] if w["code"] in NEEDS_CONFIRM_MOVE]
    if moved and not confirm_move:
        detail = (
            f"{len(moved)} warning(s) of likely swapped longitude and latitude; send it "
            "again with ?confirm_move=true if the stores are where they are meant to be."
        )
        raise ConfirmMove(detail, report)


# --- shrink ------------------------------------------------------------------------------


def shrink_refused(removed: int, of: int) -> bool:
    """More than half of the catalogue would go (a whole one included)."""
    return 2 * removed > of


def shrink_warnings(removed: int, of: int) -> list[Warning_]:
    if not shrink_refused(removed, of):
        return []
    detail = (
        f"the upload removes {removed} of the {of} stores in the catalogue; "
        "a real upload needs ?allow_shrink=true"
    )
    return [{"code": SHRINK, "removed": removed, "of": of, "detail": detail}]


# --- extents -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Box:
    """A lng/lat bounding box."""

    min_lng: float
    min_lat: float
    max_lng: float
    max_lat: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.min_lng + self.max_lng) / 2.0, (self.min_lat + self.max_lat) / 2.0

    def contains(self, lng: float, lat: float) -> bool:
        return self.min_lng <= lng <= self.max_lng and self.min_lat <= lat <= self.max_lat

    def grown(self, km: float) -> Box:
        """Every point within ``km`` of the box, and a little more (never less)."""
        d_lat = km / _KM_PER_DEG_LAT
        low, high = max(self.min_lat - d_lat, -90.0), min(self.max_lat + d_lat, 90.0)
        cos_lat = math.cos(math.radians(max(abs(low), abs(high))))
        d_lng = 360.0 if cos_lat < 1e-3 else d_lat / cos_lat
        return Box(self.min_lng - d_lng, low, self.max_lng + d_lng, high)

    def distance_km(self, lng: float, lat: float) -> float:
        """From a point to the nearest point of the box (0 inside)."""
        near_lng = min(max(lng, self.min_lng), self.max_lng)
        near_lat = min(max(lat, self.min_lat), self.max_lat)
        return haversine_m(lat, lng, near_lat, near_lng) / 1000.0


def union(boxes: Iterable[Box]) -> Box | None:
    boxes = list(boxes)
    if not boxes:
        return None
    return Box(
        min(b.min_lng for b in boxes),
        min(b.min_lat for b in boxes),
        max(b.max_lng for b in boxes),
        max(b.max_lat for b in boxes),
    )


def fence_box(fence: Fence) -> Box:
    geom = fence.geometry
    if geom["type"] == "Point":
        lng, lat = geom["coordinates"][:2]
        return Box(lng, lat, lng, lat)
    polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    exteriors = [p for rings in polygons for p in rings[0]]
    lngs, lats = [p[0] for p in exteriors], [p[1] for p in exteriors]
    return Box(min(lngs), min(lats), max(lngs), max(lats))


def _rounded(point: tuple[float, float]) -> list[float]:
    return [round(point[0], 3), round(point[1], 3)]


# --- likely swapped coordinates -------------------------------------------------------------


def move_warnings(current: Sequence[Fence], new: Sequence[Fence]) -> list[Warning_]:
    """The warnings of likely swapped lng/lat in a catalogue ``new`` replacing ``current``."""
    boxes = [fence_box(f) for f in new]
    before = union(fence_box(f) for f in current)
    if before is None:
        return _swapped_from_rest(new, boxes)
    after = union(boxes)
    moved = [] if after is None else _moved(before, after, new, boxes)
    return moved + _swapped_into(before, new, boxes)


def store_warnings(others: Sequence[Fence], fence: Fence) -> list[Warning_]:
    """The warning of likely swapped lng/lat for one store upserted among ``others``."""
    before = union(fence_box(f) for f in others)
    if before is None:
        return []
    return [_without_index(w) for w in _swapped_into(before, [fence], [fence_box(fence)])]


def _without_index(warning: Warning_) -> Warning_:
    return {k: v for k, v in warning.items() if k != "feature"}


def _swapped_into(before: Box, new: Sequence[Fence], boxes: Sequence[Box]) -> list[Warning_]:
    target = before.grown(SLACK_KM)
    return [
        _swapped(i, fence, "the current catalogue's extent")
        for i, (fence, box) in enumerate(zip(new, boxes, strict=True))
        if _swaps_into(box, target)
    ]


def _swaps_into(box: Box, target: Box) -> bool:
    lng, lat = box.centre
    return target.contains(lat, lng) and not target.contains(lng, lat)


def _swapped(index: int, fence: Fence, where: str) -> Warning_:
    detail = (
        f"store {fence.id!r} lies where {where} is only with its longitude and latitude "
        "exchanged: are they swapped?"
    )
    return {"code": SWAPPED, "id": fence.id, "feature": index, "detail": detail}


def _moved(before: Box, after: Box, new: Sequence[Fence], boxes: Sequence[Box]) -> list[Warning_]:
    (lng0, lat0), (lng1, lat1) = before.centre, after.centre
    km = haversine_m(lat0, lng0, lat1, lng1) / 1000.0
    if km <= MOVE_KM:
        return []
    far = [f.id for f, b in zip(new, boxes, strict=True) if before.distance_km(*b.centre) > MOVE_KM]
    detail = (
        f"the new catalogue's centre is {km:,.0f} km from the current one's; "
        "are longitude and latitude swapped?"
    )
    warning: Warning_ = {"code": MOVED, "distance_km": round(km, 1), "detail": detail}
    warning |= {"from": _rounded(before.centre), "to": _rounded(after.centre)}
    return [warning | {"far": len(far), "ids": far[:_NAMED]}]


def _swapped_from_rest(new: Sequence[Fence], boxes: Sequence[Box]) -> list[Warning_]:
    """On an empty catalogue each store is judged against the extent of the others."""
    out = []
    for i, rest in enumerate(_extents_without_each(boxes)):
        lng, lat = boxes[i].centre
        if rest.distance_km(lng, lat) > MOVE_KM and rest.grown(SLACK_KM).contains(lat, lng):
            out.append(_swapped(i, new[i], "the rest of the upload"))
    return out


def _extents_without_each(boxes: Sequence[Box]) -> list[Box]:
    """For each box, the union of all the others (none when there is no other)."""
    if len(boxes) < 2:
        return []
    sides = zip(
        _without_each([b.min_lng for b in boxes], lowest=True),
        _without_each([b.min_lat for b in boxes], lowest=True),
        _without_each([b.max_lng for b in boxes], lowest=False),
        _without_each([b.max_lat for b in boxes], lowest=False),
        strict=True,
    )
    return [Box(*side) for side in sides]


def _without_each(values: Sequence[float], *, lowest: bool) -> list[float]:
    """For each i, the min (or max) of ``values`` without ``values[i]``: O(n log n)."""
    order = sorted(range(len(values)), key=values.__getitem__, reverse=not lowest)
    best, second = values[order[0]], values[order[1]]
    return [second if i == order[0] else best for i in range(len(values))]

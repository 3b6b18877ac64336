"""Fence geometry, the readable rule: where a fence is, and how far a point is from it.

Each fence lives in its own local metric plane centred on it: a mid-latitude projection
on the WGS 84 ellipsoid (x = Δλ·N(φm)·cos φm, y = Δφ·M(φm), φm the mean of the point's
and the origin's latitude). Distances in that plane agree with geodesic distances to a
few centimetres for points within several kilometres of the fence. A fence holds a
point when the point is within its margin (and its radius, for a circle) of its shape,
boundary included: :class:`FenceShape`. :func:`lookup` tests every fence;
``geofence.engine.index.FenceIndex`` is its fast twin.

Also the checks of uploaded shapes: area, validity, repair, overlaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import shapely

from geofence.domain.model import Fence

FloatArray = npt.NDArray[np.float64]

_A: Final = 6_378_137.0  # WGS 84 semi-major axis, metres
_E2: Final = 6.694379990141316e-3  # WGS 84 first eccentricity squared
_RAD: Final = math.pi / 180.0


# --- the local plane ---------------------------------------------------------------------


def _metres_per_radian(phi_m: Any, xp: Any) -> tuple[Any, Any]:
    """East and north metres per radian at mid-latitude ``phi_m`` on the WGS 84 ellipsoid.

    ``xp`` is ``math`` for one point or ``numpy`` for arrays: one formula for both.
    """
    s = xp.sin(phi_m)
    w = 1.0 - _E2 * s * s
    n = _A / xp.sqrt(w)
    return n * xp.cos(phi_m), n * (1.0 - _E2) / w


def to_plane(lat0: float, lng0: float, lat: float, lng: float) -> tuple[float, float]:
    """Metres east and north of (lat0, lng0)."""
    east, north = _metres_per_radian((lat + lat0) * (0.5 * _RAD), math)
    d_lng = (lng - lng0 + 540.0) % 360.0 - 180.0
    return float(d_lng * _RAD * east), float((lat - lat0) * _RAD * north)


def to_plane_many(
    lat0: float, lng0: float, lats: FloatArray, lngs: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Vectorised :func:`to_plane`."""
    east, north = _metres_per_radian((lats + lat0) * (0.5 * _RAD), np)
    d_lng = (lngs - lng0 + 540.0) % 360.0 - 180.0
    return d_lng * _RAD * east, (lats - lat0) * _RAD * north


def from_plane_many(
    lat0: float, lng0: float, xs: FloatArray, ys: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`to_plane_many` (a few fixed-point steps on the latitude)."""
    lats = np.full_like(ys, lat0)
    for _ in range(4):
        east, north = _metres_per_radian((lats + lat0) * (0.5 * _RAD), np)
        lats = lat0 + ys / (_RAD * north)
    return lats, lng0 + xs / (_RAD * east)


# --- one fence: the rule -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FenceShape:
    """A fence in its own plane: ``base`` is its polygon, or the centre of its circle of
    ``radius_m``; the origin is the middle of its lat/lng bounding box (or the centre)."""

    fence: Fence
    lat0: float
    lng0: float
    base: Any
    radius_m: float

    @classmethod
    def of(cls, fence: Fence) -> FenceShape:
        shape = shapely.force_2d(_geometry_lnglat(fence.geometry))
        if fence.geometry["type"] == "Point":
            radius = float(fence.radius_m or 0.0)
            return cls(fence, shape.y, shape.x, shapely.Point(0.0, 0.0), radius)
        min_lng, min_lat, max_lng, max_lat = shapely.bounds(shape).tolist()
        lat0, lng0 = (min_lat + max_lat) / 2.0, (min_lng + max_lng) / 2.0
        return cls(fence, lat0, lng0, shapely.transform(shape, _planar(lat0, lng0)), 0.0)

    def distance_m(self, lat: float, lng: float) -> float:
        """Metres from the point to the fence grown by its margin (0.0 inside)."""
        x, y = to_plane(self.lat0, self.lng0, lat, lng)
        to_base = shapely.distance(self.base, shapely.Point(x, y))
        return max(0.0, float(to_base) - self.radius_m - self.fence.margin_m)

    def holds(self, lat: float, lng: float) -> bool:
        """Whether the fence grown by its margin holds the point (boundary included)."""
        return self.distance_m(lat, lng) <= 0.0


def lookup(
    shapes: Iterable[FenceShape], lat: float, lng: float, within_m: float
) -> dict[str, float]:
    """The fences within ``within_m`` of the point (those holding it at 0.0), by id, each
    with the point's ``distance_m``: every fence tested in turn."""
    distances = ((s.fence.id, s.distance_m(lat, lng)) for s in shapes)
    return {fence_id: metres for fence_id, metres in distances if metres <= within_m}


def _geometry_lnglat(geometry: dict[str, Any]) -> Any:
    return shapely.geometry.shape(geometry)


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
    if not shapes:
        return []
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

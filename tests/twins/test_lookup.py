"""The fence lookup, written once and run on the reference (every fence tested with
shapely's public API) and on the fence index (one point at a time and in array steps):
random scenes of polygons, holes, multipolygons and circles with margins, and the real
Helsinki stores. The reference itself is held to pyproj's geodesics and to an STRtree."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import mapping, shape

from geofence.domain.geometry import FenceShape, to_plane
from geofence.domain.model import Fence
from tests.twins.conftest import REFERENCE, Point, Twin

HELSINKI = Path(__file__).parents[1] / "data" / "helsinki_store_polygons.geojson"
GEOD = pyproj.Geod(ellps="WGS84")
AMBIGUOUS_M = 1e-6  # closer than this to the grown boundary, either answer is right
EXIT_M = 30.0  # the exit margin of the lookups built here

# --- fixtures ------------------------------------------------------------------------------


@cache
def helsinki() -> tuple[Fence, ...]:
    doc = json.loads(HELSINKI.read_text())
    return tuple(
        Fence(id=f"h{i:03d}", geometry=f["geometry"]) for i, f in enumerate(doc["features"])
    )


def rect(lat: float, lng: float, w_m: float, h_m: float) -> dict[str, Any]:
    """A w×h metre rectangle with its south-west corner at (lat, lng), counter-clockwise."""
    corners = [offset(lat, lng, e, n) for e, n in [(0, 0), (w_m, 0), (w_m, h_m), (0, h_m)]]
    ring = [[b, a] for a, b in corners]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def offset(lat: float, lng: float, east_m: float, north_m: float) -> tuple[float, float]:
    az = math.degrees(math.atan2(east_m, north_m))
    lng2, lat2, _ = GEOD.fwd(lng, lat, az, math.hypot(east_m, north_m))
    return lat2, lng2


def fence_shape(fence: Fence) -> Any:
    return shapely.force_2d(shape(fence.geometry))


# --- the reference's answer, with the points too close to a boundary to call -----------------


def sure_and_unsure(fences: Sequence[Fence], lat: float, lng: float) -> tuple[set[str], set[str]]:
    """(certainly inside, ambiguous) fence ids, by the reference rule."""
    sure, unsure = set(), set()
    for f in fences:
        the_shape = FenceShape.of(f)
        x, y = to_plane_of(the_shape, lat, lng)
        raw = float(shapely.distance(the_shape.base, shapely.Point(x, y)))
        d = raw - the_shape.radius_m - f.margin_m
        flat = raw == 0.0 and f.margin_m == 0.0 and f.geometry["type"] != "Point"
        depth = float(shapely.distance(shapely.boundary(the_shape.base), shapely.Point(x, y)))
        if abs(d) < AMBIGUOUS_M or (flat and depth < AMBIGUOUS_M):
            unsure.add(f.id)
        elif d <= 0:
            sure.add(f.id)
    return sure, unsure


def to_plane_of(the_shape: FenceShape, lat: float, lng: float) -> tuple[float, float]:
    return to_plane(the_shape.lat0, the_shape.lng0, lat, lng)


def geodesic_raw_m(fence: Fence, lat: float, lng: float) -> float:
    """Metres from the point to the fence (without margin), in the point's own azimuthal
    equidistant projection: geodesic distances from the point are exact there."""
    aeqd = pyproj.Proj(proj="aeqd", lat_0=lat, lon_0=lng, ellps="WGS84")
    geom = fence_shape(fence)
    if fence.geometry["type"] == "Point":
        _, _, d = GEOD.inv(lng, lat, geom.x, geom.y)
        return float(d) - (fence.radius_m or 0.0)

    def project(coords: Any) -> Any:
        xs, ys = aeqd(coords[:, 0], coords[:, 1])
        return np.column_stack((xs, ys))

    return float(shapely.distance(shapely.transform(geom, project), shapely.Point(0, 0)))


# --- strategies ----------------------------------------------------------------------------

LAT = st.floats(-60.0, 70.0)
LNG = st.floats(-170.0, 170.0)


@st.composite
def polygon_fence(draw: st.DrawFn, lat: float, lng: float, i: int) -> Fence:
    w = draw(st.sampled_from([5.0, 12.0, 50.0, 120.0]))
    h = draw(st.sampled_from([2.0, 5.0, 80.0, 300.0]))
    outer = shape(rect(lat, lng, w, h))
    kind = draw(st.sampled_from(["plain", "hole", "multi", "rotated"]))
    if kind == "hole" and min(w, h) >= 12:
        outer = outer.difference(shapely.affinity.scale(outer, 0.5, 0.5))
    elif kind == "multi":
        other = shapely.affinity.translate(outer, xoff=outer.bounds[2] - outer.bounds[0] + 1e-4)
        outer = shapely.MultiPolygon([outer, other])
    elif kind == "rotated":
        outer = shapely.affinity.rotate(outer, draw(st.floats(0, 90)))
    margin = draw(st.sampled_from([0.0, 0.0, 3.0, 25.0]))
    return Fence(id=f"p{i}", geometry=dict(mapping(outer)), margin_m=margin)


@st.composite
def circle_fence(draw: st.DrawFn, lat: float, lng: float, i: int) -> Fence:
    radius = draw(st.sampled_from([10.0, 35.0, 200.0]))
    margin = draw(st.sampled_from([0.0, 10.0]))
    geometry = {"type": "Point", "coordinates": [lng, lat]}
    return Fence(id=f"c{i}", geometry=geometry, radius_m=radius, margin_m=margin)


@st.composite
def scene(draw: st.DrawFn) -> tuple[list[Fence], float, float]:
    lat, lng = draw(LAT), draw(LNG)
    fences = []
    for i in range(draw(st.integers(1, 4))):
        east, north = draw(st.floats(-150, 150)), draw(st.floats(-150, 150))
        flat, flng = offset(lat, lng, east, north)
        make = draw(st.sampled_from([polygon_fence, polygon_fence, circle_fence]))
        fences.append(draw(make(flat, flng, i)))
    return fences, lat, lng


@st.composite
def probe(draw: st.DrawFn, fences: Sequence[Fence]) -> Point:
    """A point on, within a metre of, or far from some fence's boundary."""
    fence = draw(st.sampled_from(fences))
    geom = fence_shape(fence)
    if fence.geometry["type"] == "Point":
        ring_point = offset(geom.y, geom.x, fence.radius_m or 0.0, 0.0)
        geom = shapely.Point(ring_point[1], ring_point[0])
    else:
        geom = shapely.boundary(geom)
    t = draw(st.floats(0, 1))
    on = shapely.line_interpolate_point(geom, t, normalized=True) if geom.length else geom
    where = draw(st.sampled_from(["on", "near", "margin", "band", "far"]))
    if where == "on":
        return on.y, on.x
    spreads = {"near": 1.0, "margin": fence.margin_m + 2.0, "band": EXIT_M + 5.0, "far": 400.0}
    spread = spreads[where]
    east, north = draw(st.floats(-spread, spread)), draw(st.floats(-spread, spread))
    return offset(on.y, on.x, east, north)


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- written once, run on every twin ---------------------------------------------------------


@PROPERTY
@given(st.data(), scene(), st.sampled_from([10, 11, 12]), st.integers(1, 48))
def test_inside_is_the_reference_answer(
    twin: Twin, data: st.DataObject, sc: Any, resolution: int, size: int
) -> None:
    """On batches small enough to go straight to H3 and large enough to go through the
    coarse grid first."""
    fences, _, _ = sc
    found = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=resolution)
    points = [data.draw(probe(fences)) for _ in range(size)]
    for (lat, lng), held in zip(points, found.inside(points), strict=True):
        sure, unsure = sure_and_unsure(fences, lat, lng)
        assert sure <= set(held) <= sure | unsure, (lat, lng)
        assert held == sorted(held)


@PROPERTY
@given(st.data(), scene(), st.sampled_from([10, 11, 12]))
def test_near_holds_the_hysteresis_band_at_the_reference_distances(
    twin: Twin, data: st.DataObject, sc: Any, resolution: int
) -> None:
    fences, _, _ = sc
    found = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=resolution)
    reference = REFERENCE.lookup(fences, exit_margin_m=EXIT_M, resolution=resolution)
    points = [data.draw(probe(fences)) for _ in range(8)]
    for (lat, lng), near, expected in zip(
        points, found.near(points), reference.near(points), strict=True
    ):
        assert expected.keys() <= near.keys(), (lat, lng)
        every = reference.distances(list(near), [(lat, lng)] * len(near))
        assert list(near.values()) == pytest.approx(every, abs=1e-6), (lat, lng)


@PROPERTY
@given(st.data(), scene())
def test_distances_are_the_reference_distances(twin: Twin, data: st.DataObject, sc: Any) -> None:
    fences, _, _ = sc
    points = [data.draw(probe(fences)) for _ in range(8)]
    ids = [fences[i % len(fences)].id for i in range(len(points))]
    got = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=11).distances(ids, points)
    reference = REFERENCE.lookup(fences, exit_margin_m=EXIT_M, resolution=11)
    assert got == pytest.approx(reference.distances(ids, points), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(scene(), st.floats(-3000, 3000), st.floats(-3000, 3000))
def test_distance_matches_geodesic(twin: Twin, sc: Any, east: float, north: float) -> None:
    fences, lat, lng = sc
    point = offset(lat, lng, east, north)
    found = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=11)
    got = found.distances([f.id for f in fences], [point] * len(fences))
    expected = [max(0.0, geodesic_raw_m(f, *point) - f.margin_m) for f in fences]
    assert got == pytest.approx(expected, abs=0.5)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_helsinki_inside_is_the_reference_answer(twin: Twin, data: st.DataObject) -> None:
    fences = helsinki()
    found = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=11)
    points = [data.draw(probe(fences)) for _ in range(4)]
    for (lat, lng), held in zip(points, found.inside(points), strict=True):
        sure, unsure = sure_and_unsure(fences, lat, lng)
        assert sure <= set(held) <= sure | unsure


def test_helsinki_sample_is_found_as_by_an_strtree(twin: Twin) -> None:
    fences = list(helsinki())
    rng = np.random.default_rng(7)
    lats = rng.uniform(60.164, 60.179, 3000)
    lngs = rng.uniform(24.935, 24.953, 3000)
    found = twin.lookup(fences, exit_margin_m=EXIT_M, resolution=11)
    got = found.inside(list(zip(lats.tolist(), lngs.tolist(), strict=True)))
    tree = shapely.STRtree([fence_shape(f) for f in fences])
    pts, hit = tree.query(shapely.points(lngs, lats), predicate="intersects")
    expected: list[list[str]] = [[] for _ in lats]
    for p, h in zip(pts.tolist(), hit.tolist(), strict=True):
        expected[p].append(fences[h].id)
    assert got == [sorted(e) for e in expected]
    assert sum(map(bool, got)) > 150  # the sample does land in stores


def test_distance_far_away_is_finite_and_large(twin: Twin) -> None:
    found = twin.lookup([helsinki()[0]], exit_margin_m=EXIT_M, resolution=11)
    [d] = found.distances(["h000"], [(60.45, 22.27)])  # Turku, ~160 km
    assert 150_000 < d < 170_000


@pytest.mark.parametrize("resolution", [10, 11])
def test_small_building_is_found(twin: Twin, resolution: int) -> None:
    fence = Fence(id="b", geometry=rect(60.17, 24.94, 50.0, 80.0))
    found = twin.lookup([fence], exit_margin_m=EXIT_M, resolution=resolution)
    points = [offset(60.17, 24.94, *m) for m in [(25.0, 40.0), (49.9, 79.9), (50.5, 40.0)]]
    assert found.inside(points) == [["b"], ["b"], []]
    assert 0.4 < found.distances(["b"], points[2:])[0] < 0.6


def test_margin_grows_the_fence(twin: Twin) -> None:
    fence = Fence(id="m", geometry=rect(60.17, 24.94, 20.0, 20.0), margin_m=10.0)
    found = twin.lookup([fence], exit_margin_m=EXIT_M, resolution=11)
    points = [offset(60.17, 24.94, 29.5, 10.0), offset(60.17, 24.94, 30.5, 10.0)]
    assert found.inside(points) == [["m"], []]
    assert found.near(points[1:])[0]["m"] == pytest.approx(0.5, abs=0.05)


def test_circle_is_exact(twin: Twin) -> None:
    fence = Fence(id="c", geometry={"type": "Point", "coordinates": [24.94, 60.17]}, radius_m=50)
    found = twin.lookup([fence], exit_margin_m=EXIT_M, resolution=11)
    points = [offset(60.17, 24.94, *m) for m in [(0.0, 49.9), (35.0, 35.0), (0.0, 50.2)]]
    assert found.inside(points) == [["c"], ["c"], []]  # the second is 49.5 m away
    far = offset(60.17, 24.94, -120.0, 0.0)
    assert found.distances(["c"], [far]) == [pytest.approx(70, abs=0.1)]

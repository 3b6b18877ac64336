"""FenceIndex against brute force: shapely on every fence, and pyproj geodesics."""

from __future__ import annotations

import json
import math
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

from geofence.domain.geometry import DISTANCES_IN_TURN_BELOW, FenceIndex, to_plane
from geofence.domain.model import Fence

HELSINKI = Path(__file__).parents[1] / "data" / "helsinki_store_polygons.geojson"
GEOD = pyproj.Geod(ellps="WGS84")
AMBIGUOUS_M = 1e-6  # closer than this to the grown boundary, either answer is right
EXIT_M = 30.0  # the exit margin of the indexes built here

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


# --- brute force ---------------------------------------------------------------------------


def fence_shape(fence: Fence) -> Any:
    return shapely.force_2d(shape(fence.geometry))


def brute_raw_m(fence: Fence, lat: float, lng: float) -> float:
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


def brute_plane_m(fence: Fence, lat: float, lng: float) -> float:
    """Same, in the fence's local plane (the index's own metric): for exact comparisons."""
    geom = fence_shape(fence)
    x0, y0, x1, y1 = geom.bounds
    lat0, lng0 = (y0 + y1) / 2, (x0 + x1) / 2
    px, py = to_plane(lat0, lng0, lat, lng)
    if fence.geometry["type"] == "Point":
        return math.hypot(px, py) - (fence.radius_m or 0.0)

    def project(coords: Any) -> Any:
        return np.array([to_plane(lat0, lng0, b, a) for a, b in coords.tolist()]).reshape(-1, 2)

    return float(shapely.distance(shapely.transform(geom, project), shapely.Point(px, py)))


def brute_inside(fences: list[Fence], lat: float, lng: float) -> tuple[set[str], set[str]]:
    """(certainly inside, ambiguous) fence ids."""
    sure, unsure = set(), set()
    for f in fences:
        d = brute_plane_m(f, lat, lng) - f.margin_m
        if ambiguous(f, d, lat, lng):
            unsure.add(f.id)
        elif d <= 0:
            sure.add(f.id)
    return sure, unsure


def ambiguous(fence: Fence, d: float, lat: float, lng: float) -> bool:
    if abs(d) < AMBIGUOUS_M:
        return True
    # the distance is 0 anywhere inside a polygon: ask how far its boundary is
    flat = d <= 0 and fence.margin_m == 0 and fence.geometry["type"] != "Point"
    return flat and brute_boundary_m(fence, lat, lng) < AMBIGUOUS_M


def brute_boundary_m(fence: Fence, lat: float, lng: float) -> float:
    geom = fence_shape(fence)
    x0, y0, x1, y1 = geom.bounds
    lat0, lng0 = (y0 + y1) / 2, (x0 + x1) / 2

    def project(coords: Any) -> Any:
        return np.array([to_plane(lat0, lng0, b, a) for a, b in coords.tolist()]).reshape(-1, 2)

    px, py = to_plane(lat0, lng0, lat, lng)
    planar = shapely.transform(geom, project)
    return float(shapely.distance(shapely.boundary(planar), shapely.Point(px, py)))


def assert_agrees(index: FenceIndex, fences: list[Fence], lat: float, lng: float) -> None:
    got = set(index.inside(lat, lng))
    sure, unsure = brute_inside(fences, lat, lng)
    assert sure <= got <= sure | unsure, (lat, lng)
    batch = set(index.inside_many(np.array([lat]), np.array([lng]))[0])
    assert sure <= batch <= sure | unsure, (lat, lng)
    near = index.near(lat, lng)
    for fid in got:
        assert near[fid] == 0.0
        assert index.distance_m(fid, lat, lng) == 0.0


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
def probe(draw: st.DrawFn, fences: list[Fence]) -> tuple[float, float]:
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


@PROPERTY
@given(st.data(), scene(), st.sampled_from([10, 11, 12]))
def test_inside_matches_brute_force(data: st.DataObject, sc: Any, resolution: int) -> None:
    fences, _, _ = sc
    index = FenceIndex.build(fences, resolution=resolution)
    for _ in range(8):
        lat, lng = data.draw(probe(fences))
        assert_agrees(index, fences, lat, lng)


@PROPERTY
@given(st.data(), scene())
def test_near_covers_the_hysteresis_band(data: st.DataObject, sc: Any) -> None:
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=30.0)
    for _ in range(8):
        lat, lng = data.draw(probe(fences))
        near = index.near(lat, lng)
        for f in fences:
            d = index.distance_m(f.id, lat, lng)
            if d <= 30.0:
                assert near.get(f.id) == pytest.approx(d), (f.id, lat, lng, d)


@PROPERTY
@given(st.data(), scene())
def test_near_many_and_distances_equal_the_loop(data: st.DataObject, sc: Any) -> None:
    """The vectorised lookups (circles and polygons, margins) answer as one point at a time."""
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=30.0)
    points = [data.draw(probe(fences)) for _ in range(8)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    for found, (lat, lng) in zip(index.near_many(lats, lngs), points, strict=True):
        expected = index.near(lat, lng)
        assert found.keys() == expected.keys()
        for fence_id, metres in expected.items():
            assert found[fence_id] == pytest.approx(metres, abs=1e-6)
    ids = [fences[i % len(fences)].id for i in range(len(points))]
    loop = [index.distance_m(f, a, b) for f, a, b in zip(ids, lats, lngs, strict=True)]
    assert index.distances_arrays(ids, lats, lngs).tolist() == pytest.approx(loop, abs=1e-6)
    assert index.distances_m(ids, lats, lngs).tolist() == pytest.approx(loop, abs=1e-6)
    few = DISTANCES_IN_TURN_BELOW - 1  # these go one at a time
    assert index.distances_m(ids[:few], lats[:few], lngs[:few]).tolist() == loop[:few]


@PROPERTY
@given(st.data(), scene(), st.booleans())
def test_lookups_one_at_a_time_answer_as_in_array_steps(
    data: st.DataObject, sc: Any, band: bool
) -> None:
    """``near_many`` goes one point at a time below ``NEAR_IN_TURN_BELOW`` points without
    the band: the same fences, at the same distances, as the array steps."""
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=30.0)
    points = [data.draw(probe(fences)) for _ in range(8)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    arrays = index.near_arrays(lats, lngs, band=band)
    in_turn = index.near_in_turn(lats, lngs, band=band)
    assert [a.keys() for a in arrays] == [t.keys() for t in in_turn]
    for a, t in zip(arrays, in_turn, strict=True):
        assert [t[fence_id] for fence_id in a] == pytest.approx(list(a.values()), abs=1e-6)
    assert index.near_many(lats, lngs, band=False) == index.near_in_turn(lats, lngs, band=False)


@PROPERTY
@given(st.data(), scene(), st.sampled_from([10, 11, 12]), st.integers(1, 48))
def test_batches_match_brute_force(
    data: st.DataObject, sc: Any, resolution: int, size: int
) -> None:
    """inside_many and near_many, on batches small enough to go straight to H3 and large
    enough to go through the coarse grid first, against shapely on every fence."""
    fences, _, _ = sc
    index = FenceIndex.build(fences, resolution=resolution, exit_margin_m=EXIT_M)
    points = [data.draw(probe(fences)) for _ in range(size)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    inside, near = index.inside_many(lats, lngs), index.near_many(lats, lngs)
    unbanded = index.near_many(lats, lngs, band=False)
    for (lat, lng), held, found, few in zip(points, inside, near, unbanded, strict=True):
        sure, unsure = brute_inside(fences, lat, lng)
        assert sure <= set(held) <= sure | unsure, (lat, lng)
        assert held == sorted(held)
        for f in fences:
            metres = max(0.0, brute_plane_m(f, lat, lng) - f.margin_m)
            if f.id in held or metres <= EXIT_M:
                assert found[f.id] == pytest.approx(metres, abs=1e-6), (f.id, lat, lng)
        # without the exit band: every fence holding the point, at the same distances (a
        # batch this small goes one point at a time: float steps of math, not numpy)
        assert {f for f, metres in found.items() if metres <= 0.0} <= few.keys() <= found.keys()
        for f in few:
            assert few[f] == pytest.approx(found[f], abs=AMBIGUOUS_M), (f, lat, lng)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_helsinki_matches_brute_force(data: st.DataObject) -> None:
    fences = list(helsinki())
    index = helsinki_index()
    for _ in range(4):
        lat, lng = data.draw(probe(fences))
        sure, unsure = brute_inside(fences, lat, lng)
        assert sure <= set(index.inside(lat, lng)) <= sure | unsure


@cache
def helsinki_index() -> FenceIndex:
    return FenceIndex.build(helsinki())


def test_helsinki_batch_equals_loop_and_strtree() -> None:
    fences = list(helsinki())
    index = helsinki_index()
    rng = np.random.default_rng(7)
    lats = rng.uniform(60.164, 60.179, 20_000)
    lngs = rng.uniform(24.935, 24.953, 20_000)
    batch = index.inside_many(lats, lngs)
    assert batch == [index.inside(a, b) for a, b in zip(lats, lngs, strict=True)]
    shapes = [fence_shape(f) for f in fences]
    tree = shapely.STRtree(shapes)
    pts, hit = tree.query(shapely.points(lngs, lats), predicate="intersects")
    expected: list[list[str]] = [[] for _ in lats]
    for p, h in zip(pts.tolist(), hit.tolist(), strict=True):
        expected[p].append(fences[h].id)
    assert batch == [sorted(e) for e in expected]
    assert sum(map(bool, batch)) > 1000  # the sample does land in stores


@settings(max_examples=60, deadline=None)
@given(scene(), st.floats(-3000, 3000), st.floats(-3000, 3000))
def test_distance_matches_geodesic(sc: Any, east: float, north: float) -> None:
    fences, lat, lng = sc
    plat, plng = offset(lat, lng, east, north)
    index = FenceIndex.build(fences)
    for f in fences:
        expected = max(0.0, brute_raw_m(f, plat, plng) - f.margin_m)
        assert index.distance_m(f.id, plat, plng) == pytest.approx(expected, abs=0.5)


def test_distance_far_away_is_finite_and_large() -> None:
    index = FenceIndex.build([helsinki()[0]])
    d = index.distance_m("h000", 60.45, 22.27)  # Turku, ~160 km
    assert 150_000 < d < 170_000


@pytest.mark.parametrize("resolution", [10, 11])
def test_small_building_is_found(resolution: int) -> None:
    fence = Fence(id="b", geometry=rect(60.17, 24.94, 50.0, 80.0))
    index = FenceIndex.build([fence], resolution=resolution)
    assert index.cells >= 1
    lat, lng = offset(60.17, 24.94, 25.0, 40.0)
    assert index.inside(lat, lng) == ["b"]
    assert index.inside(*offset(60.17, 24.94, 49.9, 79.9)) == ["b"]
    assert index.inside(*offset(60.17, 24.94, 50.5, 40.0)) == []
    assert 0.4 < index.distance_m("b", *offset(60.17, 24.94, 50.5, 40.0)) < 0.6


def test_margin_grows_the_fence() -> None:
    fence = Fence(id="m", geometry=rect(60.17, 24.94, 20.0, 20.0), margin_m=10.0)
    index = FenceIndex.build([fence])
    assert index.inside(*offset(60.17, 24.94, 29.5, 10.0)) == ["m"]
    assert index.inside(*offset(60.17, 24.94, 30.5, 10.0)) == []
    assert index.near(*offset(60.17, 24.94, 30.5, 10.0))["m"] == pytest.approx(0.5, abs=0.05)


def test_circle_is_exact() -> None:
    fence = Fence(id="c", geometry={"type": "Point", "coordinates": [24.94, 60.17]}, radius_m=50)
    index = FenceIndex.build([fence])
    assert index.inside(*offset(60.17, 24.94, 0.0, 49.9)) == ["c"]
    assert index.inside(*offset(60.17, 24.94, 35.0, 35.0)) == ["c"]  # 49.5 m
    assert index.inside(*offset(60.17, 24.94, 0.0, 50.2)) == []
    assert index.distance_m("c", *offset(60.17, 24.94, -120.0, 0.0)) == pytest.approx(70, abs=0.1)


def test_accessors() -> None:
    fences = list(helsinki()[:5])
    index = FenceIndex.build(fences)
    assert len(index) == 5
    assert index.fence("h002") is fences[2]
    assert index.revision("h002") == fences[2].revision
    assert index.cells > 0
    with pytest.raises(KeyError):
        index.fence("nope")
    with pytest.raises(ValueError, match="unique"):
        FenceIndex.build([fences[0], fences[0]])

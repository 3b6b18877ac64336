"""Catalogue parsing: the real Helsinki file, a corpus of bad uploads, repair, file import."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from geofence.adapters.geofile import read_feature_collection, read_geofile
from geofence.domain.errors import InvalidInput
from geofence.domain.geojson import parse_feature, parse_feature_collection

HELSINKI = Path(__file__).parents[1] / "data" / "helsinki_store_polygons.geojson"
BAD = Path(__file__).parent.parent / "data" / "bad_uploads"
TZ = "Europe/Helsinki"
SQUARE = [[24.94, 60.17], [24.941, 60.17], [24.941, 60.1705], [24.94, 60.1705], [24.94, 60.17]]
BOW_TIE = [[24.94, 60.17], [24.941, 60.1705], [24.941, 60.17], [24.94, 60.1705], [24.94, 60.17]]


def helsinki() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(HELSINKI.read_text())
    for i, feature in enumerate(doc["features"]):
        feature["id"] = f"store-{i}"
    return doc


def feature(fid: str | None = "s1", coords: Any = None, **props: Any) -> dict[str, Any]:
    out = {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Polygon", "coordinates": [coords or SQUARE]},
    }
    if fid is not None:
        out["id"] = fid
    return out


def collection(*features: object) -> dict[str, Any]:
    """A FeatureCollection of ``features``, whatever they are (a test may send nonsense)."""
    return {"type": "FeatureCollection", "features": list(features)}


def problems_of(doc: Any, **options: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as caught:
        parse_feature_collection(doc, default_timezone=TZ, **options)
    return [p.as_dict() for p in caught.value.problems]


def is_ccw(ring: list[list[float]]) -> bool:
    return bool(shapely.LinearRing(ring).is_ccw)


# --- the real catalogue --------------------------------------------------------------------


def test_helsinki_parses_with_overlaps_as_warnings() -> None:
    report = parse_feature_collection(helsinki(), default_timezone=TZ)
    assert len(report.fences) == 162
    overlaps = [w for w in report.warnings if w["code"] == "overlap"]
    assert len(overlaps) == 4  # the data's README: 4 pairs overlap
    assert all(w["area_m2"] > 0 for w in overlaps)
    fence = report.fences[1]
    assert fence.id == "store-1"
    assert fence.timezone == TZ
    assert fence.name == "Sanomatalo"
    assert fence.properties["shop_names"] == ["R-Kioski Sanomatalo"]


def test_helsinki_winding_is_normalised() -> None:
    doc = helsinki()
    for f in doc["features"]:  # upload every ring the wrong way round
        f["geometry"]["coordinates"] = [r[::-1] for r in f["geometry"]["coordinates"]]
    report = parse_feature_collection(doc, default_timezone=TZ)
    holes = 0
    for fence in report.fences:
        exterior, *inner = fence.geometry["coordinates"]
        assert is_ccw(exterior)
        assert not any(is_ccw(r) for r in inner)
        holes += len(inner)
    assert holes >= 33
    original = parse_feature_collection(helsinki(), default_timezone=TZ)
    assert [f.geometry for f in report.fences] == [f.geometry for f in original.fences]


def test_properties_become_fence_fields() -> None:
    doc = collection(
        feature(
            "cafe-1",
            name="Cafe",
            tags=["cafe", "brand:x"],
            timezone="Europe/Stockholm",
            margin_m=15,
            dwell_s=300,
        ),
        {
            "type": "Feature",
            "properties": {"id": "kiosk", "radius_m": 40},
            "geometry": {"type": "Point", "coordinates": [24.95, 60.17, 12.0]},
        },
    )
    cafe, kiosk = parse_feature_collection(doc, default_timezone=TZ).fences
    assert (cafe.name, cafe.tags, cafe.timezone) == (
        "Cafe",
        ("cafe", "brand:x"),
        "Europe/Stockholm",
    )
    assert (cafe.margin_m, cafe.dwell_s, cafe.radius_m) == (15.0, 300.0, None)
    assert (kiosk.id, kiosk.radius_m, kiosk.geometry["type"]) == ("kiosk", 40.0, "Point")


# --- bad uploads ---------------------------------------------------------------------------

CASES = sorted(BAD.glob("*.json"))


def test_corpus_is_large() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_upload_is_rejected(path: Path) -> None:
    case = json.loads(path.read_text())
    options = case.get("options", {})
    if "region" in options:
        options["region"] = tuple(options["region"])
    problems = problems_of(case["upload"], **options)
    codes = {p["code"] for p in problems}
    assert case["expect_code"] in codes, problems
    assert all(p["detail"] for p in problems)


def test_every_problem_is_reported_at_once() -> None:
    unclosed = SQUARE[:-1]
    doc = collection(
        feature("a"),
        feature("b", coords=BOW_TIE),
        feature("a", margin_m=-1),
        feature(None, coords=unclosed),
        {
            "type": "Feature",
            "id": "p",
            "properties": {},
            "geometry": {"type": "Point", "coordinates": [24, 60]},
        },
        "nonsense",
    )
    problems = problems_of(doc)
    got = {(p.get("feature"), p["code"]) for p in problems}
    assert got == {
        (1, "invalid-geometry"),
        (2, "bad-property"),
        (2, "duplicate-id"),
        (3, "missing-id"),
        (3, "unclosed-ring"),
        (4, "bad-radius"),
        (5, "not-a-feature"),
    }
    by_feature = {p.get("feature"): p for p in problems}
    assert by_feature[1]["id"] == "b"
    assert "Self-intersection" in by_feature[1]["detail"]


def test_region_accepts_fences_inside_it() -> None:
    report = parse_feature_collection(
        helsinki(), default_timezone=TZ, region=(19.0, 59.0, 32.0, 71.0)
    )
    assert len(report.fences) == 162


def test_repair_fixes_a_bow_tie_and_reports_the_areas() -> None:
    report = parse_feature_collection(
        collection(feature("b", coords=BOW_TIE)), default_timezone=TZ, repair=True
    )
    (fence,) = report.fences
    assert fence.geometry["type"] == "MultiPolygon"
    assert shape(fence.geometry).is_valid
    (repaired,) = report.repairs
    assert repaired["code"] == "repaired"
    assert repaired["id"] == "b"
    assert repaired in report.warnings
    # the two triangles hold half the square (55.6 m × 55.5 m ≈ 3090 m²)
    assert repaired["area_after_m2"] == pytest.approx(3090 / 2, rel=0.02)
    assert repaired["area_before_m2"] != repaired["area_after_m2"]


def test_repair_that_leaves_no_area_is_still_a_problem() -> None:
    line = [[24.94, 60.17], [24.941, 60.17], [24.942, 60.17], [24.94, 60.17]]
    problems = problems_of(collection(feature("z", coords=line)), repair=True)
    assert [p["code"] for p in problems] == ["invalid-geometry"]


# --- single feature ------------------------------------------------------------------------


def test_single_feature_takes_the_url_id() -> None:
    fence, warnings = parse_feature(feature(None), store_id="s9", default_timezone=TZ)
    assert fence.id == "s9"
    assert warnings == []


def test_single_feature_id_must_match_the_url() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_feature(feature("s1"), store_id="s2", default_timezone=TZ)
    assert [p.code for p in caught.value.problems] == ["id-mismatch"]


def test_single_feature_repair_is_reported() -> None:
    fence, warnings = parse_feature(
        feature("b", coords=BOW_TIE), store_id="b", default_timezone=TZ, repair=True
    )
    assert [w["code"] for w in warnings] == ["repaired"]
    assert fence.geometry["type"] == "MultiPolygon"


def test_input_is_not_modified() -> None:
    doc = collection(feature("a", coords=SQUARE[::-1]))
    before = copy.deepcopy(doc)
    parse_feature_collection(doc, default_timezone=TZ)
    assert doc == before


# --- files ---------------------------------------------------------------------------------


def test_geopackage_in_etrs_tm35fin_round_trips(tmp_path: Path) -> None:
    source = gpd.read_file(HELSINKI, engine="pyogrio").iloc[:20][["name", "shop_count", "geometry"]]
    path = tmp_path / "stores.gpkg"
    source.to_crs("EPSG:3067").to_file(path, driver="GPKG", engine="pyogrio")
    got = read_geofile(path)
    assert any("EPSG:3067" in n for n in got.notes)
    assert "crs" not in got.collection
    for feat, original in zip(got.collection["features"], source.geometry, strict=True):
        back = shapely.get_coordinates(shape(feat["geometry"]))
        assert np.abs(back - shapely.get_coordinates(original)).max() < 1e-6
    for i, feat in enumerate(got.collection["features"]):
        feat["id"] = f"s{i}"
    report = parse_feature_collection(got.collection, default_timezone=TZ)
    assert len(report.fences) == 20


def test_file_without_crs_is_assumed_wgs84(tmp_path: Path) -> None:
    path = tmp_path / "plain.geojson"
    path.write_text(json.dumps(collection(feature("a"))))
    got = read_geofile(path)
    assert "crs" not in read_feature_collection(path)
    assert got.collection["features"][0]["geometry"]["coordinates"][0][0] == SQUARE[0]
    assert got.notes == [] or any("EPSG:4326" in n for n in got.notes)


def test_an_empty_collection_is_an_empty_catalogue() -> None:
    report = parse_feature_collection(collection(), default_timezone=TZ)
    assert report.fences == []
    assert report.warnings == []


@pytest.mark.parametrize("kind", [["Polygon"], {"type": "Polygon"}, 7])
def test_a_geometry_type_that_is_not_a_string_is_an_unknown_type(kind: Any) -> None:
    doc = collection({"type": "Feature", "id": "x", "geometry": {"type": kind}, "properties": {}})
    [problem] = problems_of(doc)
    assert problem["code"] == "unknown-geometry-type"


# --- stricter input: ids, bbox, missing members, every problem of a ring ---------------------


@pytest.mark.parametrize(
    "fid", ["", "s" * 129, "store\x001", "store-\u202e1", "store 1", "caf\u00e9", "a/b", "x\n"]
)
def test_an_id_outside_the_pattern_is_invalid(fid: str) -> None:
    [problem] = problems_of(collection(feature(fid)))
    assert (problem["code"], problem["path"]) == ("invalid-id", "id")
    assert "id" not in problem  # the bad id is not echoed as the feature's id
    assert len(problem["detail"]) < 200
    assert "\x00" not in problem["detail"]


@pytest.mark.parametrize("fid", ["s", "s" * 128, "osm-way-88777732", "brand:x.store_1-A"])
def test_an_id_inside_the_pattern_is_accepted(fid: str) -> None:
    (fence,) = parse_feature_collection(collection(feature(fid)), default_timezone=TZ).fences
    assert fence.id == fid


def test_an_id_in_properties_is_held_to_the_same_pattern() -> None:
    doc = collection(feature(None, id="bad id"))
    assert [p["code"] for p in problems_of(doc)] == ["invalid-id"]


@pytest.mark.parametrize("url_id", ["", "s" * 129, "a\x00", "\u202eevil", "with space"])
def test_a_url_id_outside_the_pattern_is_invalid(url_id: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_feature(feature(None), store_id=url_id, default_timezone=TZ)
    assert [(p.code, p.path) for p in caught.value.problems] == [("invalid-id", "store_id")]


@pytest.mark.parametrize(
    "bbox",
    [
        [24.9, 60.1, 25.0],
        [24.9, 60.1, 25.0, 60.2, 1.0],
        [24.9, 60.1, 25.0, "60.2"],
        [24.9, 60.1, True, 60.2],
        "24.9,60.1,25.0,60.2",
        None,
        [25.0, 60.1, 24.9, 60.2],
        [24.9, 60.2, 25.0, 60.1],
        [24.9, 60.1, 10.0, 25.0, 60.2, 0.0],
        [-200.0, 60.1, 25.0, 60.2],
        [24.9, 60.1, 25.0, 95.0],
    ],
)
def test_a_bad_bbox_is_reported_wherever_it_is(bbox: Any) -> None:
    on_collection = {**collection(feature("a")), "bbox": bbox}
    on_feature = collection({**feature("b"), "bbox": bbox})
    on_geometry = collection(feature("c"))
    on_geometry["features"][0]["geometry"]["bbox"] = bbox
    got = [problems_of(doc) for doc in (on_collection, on_feature, on_geometry)]
    assert [[(p["code"], p["path"]) for p in ps] for ps in got] == [
        [("invalid-bbox", "bbox")],
        [("invalid-bbox", "bbox")],
        [("invalid-bbox", "geometry.bbox")],
    ]


@pytest.mark.parametrize(
    "bbox", [[24.9, 60.1, 25.0, 60.2], [24.9, 60.1, 0.0, 25.0, 60.2, 30.0], [0, 0, 0, 0]]
)
def test_a_good_bbox_is_accepted(bbox: list[float]) -> None:
    doc = {**collection({**feature("a"), "bbox": bbox}), "bbox": bbox}
    assert len(parse_feature_collection(doc, default_timezone=TZ).fences) == 1


def test_a_feature_without_properties_has_its_own_code() -> None:
    bare = {k: v for k, v in feature("a").items() if k != "properties"}
    [problem] = problems_of(collection(bare))
    assert (problem["code"], problem["path"], problem["id"]) == (
        "missing-properties",
        "properties",
        "a",
    )


def test_null_properties_are_allowed() -> None:
    doc = collection({**feature("a"), "properties": None})
    assert len(parse_feature_collection(doc, default_timezone=TZ).fences) == 1


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Polygon"},
        {"type": "MultiPolygon"},
        {"type": "Polygon", "coordinates": None},
        {"type": "Point"},
    ],
)
def test_a_geometry_without_coordinates_is_missing_coordinates(geometry: dict[str, Any]) -> None:
    props = {"radius_m": 50} if geometry["type"] == "Point" else {}
    doc = collection({"type": "Feature", "id": "a", "properties": props, "geometry": geometry})
    [problem] = problems_of(doc)
    assert (problem["code"], problem["path"]) == ("missing-coordinates", "geometry.coordinates")


def test_an_unclosed_ring_out_of_range_reports_both() -> None:
    ring = [[24.94, 60.17], [24.941, 60.17], [24.941, 95.0], [24.94, 60.1705]]
    codes = sorted(p["code"] for p in problems_of(collection(feature("a", coords=ring))))
    assert codes == ["out-of-range", "unclosed-ring"]


def test_a_short_unclosed_ring_reports_both() -> None:
    ring = [[24.94, 60.17], [24.941, 60.17], [24.941, 60.1705]]
    codes = sorted(p["code"] for p in problems_of(collection(feature("a", coords=ring))))
    assert codes == ["too-few-positions", "unclosed-ring"]

"""What an upload does to the catalogue: the diff, the shrink guard, likely swapped lng/lat."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.errors import CatalogueShrink, ConfirmMove, InvalidInput, Problem
from geofence.domain.model import Fence
from geofence.domain.uploads import (
    Box,
    _extents_without_each,
    check_guards,
    move_warnings,
    replace_report,
    shrink_refused,
    store_warnings,
    union,
)

HELSINKI = (24.94, 60.17)
TALLINN = (24.75, 59.44)
LIMERICK = (-8.63, 52.66)


def square(fid: str, lng: float, lat: float, size: float = 0.0005) -> Fence:
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return Fence(id=fid, geometry={"type": "Polygon", "coordinates": [ring]})


def town(prefix: str, lng: float, lat: float, n: int = 5) -> list[Fence]:
    return [square(f"{prefix}{i}", lng + 0.01 * i, lat + 0.005 * i) for i in range(n)]


def codes(warnings: list[dict[str, Any]]) -> list[str]:
    return [w["code"] for w in warnings]


@pytest.mark.parametrize(
    ("removed", "of", "refused"),
    [(0, 0, False), (0, 5, False), (3, 6, False), (4, 6, True), (1, 1, True), (6, 6, True)],
)
def test_shrink_is_refused_past_half(removed: int, of: int, refused: bool) -> None:
    assert shrink_refused(removed, of) is refused


def test_the_report_shows_the_diff_and_the_shrink() -> None:
    current = town("h", *HELSINKI)
    new = [current[0], square("h1", 24.9, 60.2), square("x", 24.95, 60.18)]
    report = replace_report(current, new)
    assert (report["added"], report["changed"], report["removed"]) == (
        ["x"],
        ["h1"],
        ["h2", "h3", "h4"],
    )
    assert report["shrink"] == {"removed": 3, "of": 5}
    assert report["stores"] == 3
    assert codes(report["warnings"]) == ["catalogue-shrink"]


def test_the_guards_refuse_until_allowed() -> None:
    report = replace_report(town("h", *HELSINKI), [])
    with pytest.raises(CatalogueShrink) as caught:
        check_guards(report, allow_shrink=False, confirm_move=False)
    assert caught.value.report is report
    check_guards(report, allow_shrink=True, confirm_move=False)
    moved = replace_report(town("h", *HELSINKI), town("h", HELSINKI[1], HELSINKI[0]))
    with pytest.raises(ConfirmMove):
        check_guards(moved, allow_shrink=False, confirm_move=False)
    check_guards(moved, allow_shrink=False, confirm_move=True)


def test_a_nearby_catalogue_has_no_move_warning() -> None:
    assert move_warnings(town("h", *HELSINKI), town("t", *TALLINN)) == []


def test_a_whole_catalogue_swapped_has_moved() -> None:
    [moved, *swaps] = move_warnings(town("h", *HELSINKI), town("h", HELSINKI[1], HELSINKI[0]))
    assert moved["code"] == "catalogue-moved"
    assert moved["distance_km"] > 1000
    assert moved["far"] == 5
    assert moved["ids"] == [f"h{i}" for i in range(5)]
    assert codes(swaps) == ["swapped-coordinates"] * 5


def test_a_catalogue_that_really_moved_names_no_store_as_swapped() -> None:
    warnings = move_warnings(town("h", *HELSINKI), town("l", *LIMERICK))
    assert codes(warnings) == ["catalogue-moved"]


def test_one_store_swapped_into_the_extent_is_named() -> None:
    current = town("h", *HELSINKI)
    new = [*current, square("odd", HELSINKI[1] + 0.001, HELSINKI[0] + 0.001)]
    swaps = [w for w in move_warnings(current, new) if w["code"] == "swapped-coordinates"]
    assert [(w["id"], w["feature"]) for w in swaps] == [("odd", 5)]


def test_on_an_empty_catalogue_the_odd_one_out_is_named() -> None:
    new = [*town("h", *HELSINKI), square("odd", HELSINKI[1], HELSINKI[0])]
    assert [(w["id"], w["feature"]) for w in move_warnings([], new)] == [("odd", 5)]


def test_on_an_empty_catalogue_two_far_towns_are_fine() -> None:
    assert move_warnings([], [*town("h", *HELSINKI), *town("l", *LIMERICK)]) == []
    assert move_warnings([], [square("only", HELSINKI[1], HELSINKI[0])]) == []


def test_one_store_upserted_swapped_is_named() -> None:
    current = town("h", *HELSINKI)
    [warning] = store_warnings(current, square("odd", HELSINKI[1], HELSINKI[0]))
    assert (warning["code"], warning["id"]) == ("swapped-coordinates", "odd")
    assert store_warnings(current, square("ok", 24.95, 60.18)) == []
    assert store_warnings([], square("odd", HELSINKI[1], HELSINKI[0])) == []


@given(
    st.floats(-85.0, 85.0),
    st.floats(-170.0, 170.0),
    st.floats(-5.0, 5.0),
    st.floats(-5.0, 5.0),
    st.floats(1.0, 500.0),
)
def test_a_grown_box_holds_every_point_within_the_distance(
    lat: float, lng: float, d_lat: float, d_lng: float, km: float
) -> None:
    box = Box(lng, lat, lng + 0.01, lat + 0.01)
    point = (lng + d_lng, lat + d_lat)
    if box.distance_km(*point) <= km:
        assert box.grown(km).contains(*point)


boxes = st.lists(
    st.tuples(st.floats(-180, 180), st.floats(-90, 90), st.floats(0, 5), st.floats(0, 5)).map(
        lambda t: Box(t[0], t[1], t[0] + t[2], t[1] + t[3])
    ),
    min_size=2,
    max_size=12,
)


@given(boxes)
def test_the_extent_without_each_box_is_the_union_of_the_others(given_boxes: list[Box]) -> None:
    got = _extents_without_each(given_boxes)
    want = [union(given_boxes[:i] + given_boxes[i + 1 :]) for i in range(len(given_boxes))]
    assert got == want


def test_refusals_cross_a_process_boundary_whole() -> None:
    problems = [Problem(code="invalid-id", detail="no", feature=0, path="id")]
    back = pickle.loads(pickle.dumps(InvalidInput(problems)))
    assert back.problems == problems
    assert back.detail == "1 problem(s) in the input"
    refused = pickle.loads(pickle.dumps(ConfirmMove("moved", {"warnings": []})))
    assert (type(refused), refused.detail, refused.report) == (
        ConfirmMove,
        "moved",
        {"warnings": []},
    )

"""The fence index's compact table: it gives back the fences it was given, and an index
built from a table of replicated footprints (tools/replicas.py, as benchmarks/million.py
makes a million) answers as the reference rule."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.geometry import FenceShape, lookup
from geofence.domain.model import Fence
from geofence.engine.fences import FenceIds, FenceTable
from geofence.engine.index import FenceIndex
from tests.twins.test_lookup import EXIT_M, PROPERTY, scene
from tools.replicas import points, replicas

WORDS = st.text(max_size=6)


@st.composite
def dressed(draw: st.DrawFn, fence: Fence) -> Fence:
    """The fence with what else a store may carry, its geometry in lists as read from
    GeoJSON."""
    return msgspec.structs.replace(
        fence,
        geometry=msgspec.json.decode(msgspec.json.encode(fence.geometry)),
        name=draw(st.none() | WORDS),
        tags=tuple(draw(st.lists(WORDS, max_size=3))),
        timezone=draw(st.sampled_from(["Europe/Helsinki", "Asia/Tokyo"])),
        dwell_s=draw(st.none() | st.floats(0.0, 900.0)),
        properties=draw(st.dictionaries(WORDS, st.none() | st.integers() | WORDS, max_size=3)),
    )


@PROPERTY
@given(st.data(), scene())
def test_a_table_gives_back_the_fences_it_was_given(data: st.DataObject, sc: Any) -> None:
    fences = [data.draw(dressed(f)) for f in sc[0]]
    table = FenceTable.of(fences)
    assert [table.fence(i) for i in range(len(table))] == fences
    assert [table.revision(i) for i in range(len(table))] == [f.revision for f in fences]
    index = FenceIndex.build_table(table)
    assert index.fences() == fences
    assert all(index.revision(f.id) == f.revision for f in fences)


def test_a_position_with_an_altitude_keeps_its_fence_whole() -> None:
    ring = [[24.94, 60.17, 5.0], [24.941, 60.17, 5.0], [24.941, 60.171, 5.0], [24.94, 60.17, 5.0]]
    fence = Fence(id="a", geometry={"type": "Polygon", "coordinates": [ring]}, name="up")
    table = FenceTable.of([fence])
    assert table.fence(0) is fence
    assert FenceIndex.build_table(table).inside(60.1701, 24.9405) == ["a"]


def test_a_table_of_replicas_makes_fences_whose_revisions_it_gives() -> None:
    table = replicas(400, seed=5)
    made = [table.fence(i) for i in (0, 161, 162, 399)]
    assert [table.revision(i) for i in (0, 161, 162, 399)] == [f.revision for f in made]
    assert FenceTable.of(made).fence(2) == made[2]
    assert len({tuple(map(tuple, f.geometry["coordinates"][0])) for f in made}) == 4


@pytest.mark.parametrize("seed", [3, 4])
def test_replicated_footprints_answer_as_the_reference(seed: int) -> None:
    """Copies of the Helsinki footprints, turned and scaled, in several cities: the index
    built from their table finds, one point at a time and in array steps, the fences the
    reference rule finds, at its distances; an index built from the same fences as
    ``Fence`` structs answers the same."""
    table = replicas(700, seed=seed)
    fences = [table.fence(i) for i in range(len(table))]
    index = FenceIndex.build_table(table, exit_margin_m=EXIT_M)
    lats, lngs = points(table, 300, seed + 1, inside_share=0.6)
    shapes = [FenceShape.of(f) for f in fences]
    expected = [sorted(lookup(shapes, lat, lng, 0.0)) for lat, lng in zip(lats, lngs, strict=True)]
    assert sum(map(bool, expected)) > 100  # the points do find fences
    assert index.inside_many(lats, lngs) == expected
    assert [index.inside(a, b) for a, b in zip(lats, lngs, strict=True)] == expected
    assert FenceIndex.build(fences, exit_margin_m=EXIT_M).inside_many(lats, lngs) == expected
    for lat, lng, near in zip(lats, lngs, index.near_many(lats, lngs), strict=True):
        within = lookup(shapes, lat, lng, EXIT_M)
        assert within.keys() <= near.keys()
        assert [near[f] for f in within] == pytest.approx(list(within.values()), abs=1e-6)


def test_many_cells_are_found_without_the_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``_DICT_CELLS_AT_MOST`` cells one-point lookups search the sorted cells."""
    table = replicas(300, seed=6)
    lats, lngs = points(table, 200, 7, inside_share=0.6)
    small = FenceIndex.build_table(table)
    monkeypatch.setattr("geofence.engine.index._DICT_CELLS_AT_MOST", 0)
    large = FenceIndex.build_table(table)
    pairs = list(zip(lats.tolist(), lngs.tolist(), strict=True))
    assert [large.near(a, b) for a, b in pairs] == [small.near(a, b) for a, b in pairs]
    assert sum(bool(large.inside(a, b)) for a, b in pairs) > 50
    assert np.all(large.inside_many(lats, lngs) == small.inside_many(lats, lngs))


def test_the_box_grid_finds_what_the_h3_cover_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``inside_pairs`` asks the grid of boxes; without it (a fence over too many squares)
    the H3 cover: the same pairs."""
    table = replicas(500, seed=8)
    lats, lngs = points(table, 2_000, 9, inside_share=0.5)
    gridded = FenceIndex.build_table(table).inside_pairs(lats, lngs)
    monkeypatch.setattr("geofence.engine.index._BoxGrid.MOST_SQUARES", 0)
    covered = FenceIndex.build_table(table).inside_pairs(lats, lngs)
    assert len(gridded[0]) > 300
    assert all(np.array_equal(a, b) for a, b in zip(gridded, covered, strict=True))


def test_a_spilled_table_gives_back_the_same_fences(tmp_path: Any) -> None:
    """The vertices moved to a mapped file, unlinked at once: the same fences, read-only."""
    table = replicas(400, seed=10)
    made = [table.fence(i) for i in range(len(table))]
    assert not table.spilled
    table.spill(str(tmp_path))
    assert table.spilled
    assert not list(tmp_path.iterdir())  # unlinked: it goes with the mapping
    assert not table.coords.flags.writeable
    assert [table.fence(i) for i in range(len(table))] == made
    table.spill(str(tmp_path))  # once only
    assert [table.fence(i) for i in range(len(table))] == made


def test_a_big_table_is_spilled_once_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``_SPILL_FROM_VERTICES`` the index moves its table's vertices to a mapped
    file once built, and answers as one that keeps them."""
    table = replicas(500, seed=11)
    lats, lngs = points(table, 1_000, 12, inside_share=0.5)
    kept = FenceIndex.build_table(table)
    assert not table.spilled
    monkeypatch.setattr("geofence.engine.index._SPILL_FROM_VERTICES", len(table.coords))
    again = replicas(500, seed=11)
    spilled = FenceIndex.build_table(again)
    assert again.spilled
    assert spilled.fences() == kept.fences()
    assert spilled.inside_many(lats, lngs) == kept.inside_many(lats, lngs)
    assert sum(map(bool, kept.inside_many(lats, lngs))) > 100


@pytest.mark.parametrize("dict_ids", [0, 65_536], ids=["by-crc", "by-dict"])
@given(st.lists(st.text(max_size=8), max_size=40), st.lists(st.text(max_size=8), max_size=10))
def test_compact_ids_find_each_id_and_sort_as_strings(
    dict_ids: int, ids: list[str], others: list[str]
) -> None:
    """Each id found at its place, any other not; ranks as the strings sort; duplicates
    told; found alike by the CRCs (many ids) and by the dict (fewer)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("geofence.engine.fences.DICT_IDS", dict_ids)
        held = FenceIds(ids)
    assert list(held) == ids
    assert held.unique == (len(set(ids)) == len(ids))
    first = {fence_id: i for i, fence_id in reversed(list(enumerate(ids)))}
    assert [held.find(f) for f in ids] == [first[f] for f in ids] or not held.unique
    assert all(held.find(f) is None for f in others if f not in first)
    assert sorted(range(len(ids)), key=held.rank.__getitem__) == sorted(
        range(len(ids)), key=lambda i: (ids[i], i)
    )
    numbers = np.arange(len(ids))[::-1]
    assert held.take(numbers) == [ids[i] for i in numbers]
    with pytest.raises(KeyError):
        held.number("\x00 not an id" if "\x00 not an id" not in first else "\x01")
    assert held.find(3) is None


def test_ids_of_the_same_crc_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """``plumless`` and ``buckeroo`` share a CRC-32: each is found as itself."""
    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")
    monkeypatch.setattr("geofence.engine.fences.DICT_IDS", 0)
    held = FenceIds(["plumless", "x", "buckeroo"])
    assert (held.find("plumless"), held.find("buckeroo")) == (0, 2)

"""What only the fence index has: its ways of answering (one point at a time or in array
steps, with or without the exit band) agree with each other, and its accessors. Its
answers against the reference rule are in tests/twins/test_lookup.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.model import Fence
from geofence.engine.index import DISTANCES_IN_TURN_BELOW, FenceIndex
from tests.twins.test_lookup import EXIT_M, PROPERTY, helsinki, probe, scene


@PROPERTY
@given(st.data(), scene(), st.booleans())
def test_lookups_one_at_a_time_answer_as_in_array_steps(
    data: st.DataObject, sc: Any, band: bool
) -> None:
    """``near_many`` goes one point at a time below ``NEAR_IN_TURN_BELOW`` points without
    the band: the same fences, at the same distances, as the array steps."""
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=EXIT_M)
    points = [data.draw(probe(fences)) for _ in range(8)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    arrays = index.near_arrays(lats, lngs, band=band)
    in_turn = index.near_in_turn(lats, lngs, band=band)
    assert [a.keys() for a in arrays] == [t.keys() for t in in_turn]
    for a, t in zip(arrays, in_turn, strict=True):
        assert [t[fence_id] for fence_id in a] == pytest.approx(list(a.values()), abs=1e-6)
    assert index.near_many(lats, lngs, band=False) == index.near_in_turn(lats, lngs, band=False)


@PROPERTY
@given(st.data(), scene(), st.integers(1, 48))
def test_without_the_band_every_fence_holding_the_point_is_kept(
    data: st.DataObject, sc: Any, size: int
) -> None:
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=EXIT_M)
    points = [data.draw(probe(fences)) for _ in range(size)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    near, unbanded = index.near_many(lats, lngs), index.near_many(lats, lngs, band=False)
    for found, few in zip(near, unbanded, strict=True):
        assert {f for f, metres in found.items() if metres <= 0.0} <= few.keys() <= found.keys()
        for f in few:
            assert few[f] == pytest.approx(found[f], abs=1e-6)


@PROPERTY
@given(st.data(), scene())
def test_distances_one_at_a_time_below_the_threshold(data: st.DataObject, sc: Any) -> None:
    fences, _, _ = sc
    index = FenceIndex.build(fences, exit_margin_m=EXIT_M)
    points = [data.draw(probe(fences)) for _ in range(8)]
    lats, lngs = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    ids = [fences[i % len(fences)].id for i in range(len(points))]
    loop = [index.distance_m(f, a, b) for f, a, b in zip(ids, lats, lngs, strict=True)]
    assert index.distances_m(ids, lats, lngs).tolist() == pytest.approx(loop, abs=1e-6)
    few = DISTANCES_IN_TURN_BELOW - 1  # these go one at a time: the very same floats
    assert index.distances_m(ids[:few], lats[:few], lngs[:few]).tolist() == loop[:few]


def test_helsinki_batch_equals_the_loop() -> None:
    index = FenceIndex.build(helsinki())
    rng = np.random.default_rng(7)
    lats = rng.uniform(60.164, 60.179, 20_000)
    lngs = rng.uniform(24.935, 24.953, 20_000)
    batch = index.inside_many(lats, lngs)
    assert batch == [index.inside(a, b) for a, b in zip(lats, lngs, strict=True)]
    assert sum(map(bool, batch)) > 1000


def test_accessors() -> None:
    fences = list(helsinki()[:5])
    index = FenceIndex.build(fences)
    assert len(index) == 5
    assert index.fence("h002") == fences[2]
    assert index.fences() == fences
    assert index.revision("h002") == fences[2].revision
    assert index.cells > 0
    with pytest.raises(KeyError):
        index.fence("nope")
    with pytest.raises(ValueError, match="unique"):
        FenceIndex.build([fences[0], fences[0]])


def test_a_fence_smaller_than_a_cell_is_indexed() -> None:
    fence = Fence(id="b", geometry={"type": "Point", "coordinates": [24.94, 60.17]}, radius_m=3)
    assert FenceIndex.build([fence], resolution=10).cells >= 1

"""The walking devices of the single-ping benchmark: each device's pings go on in time at
its own steady interval, at walking speeds, end now, and go into stores long enough for
entries."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import walks
from benchmarks.index import tiles
from geofence.engine.index import FenceIndex

FENCES = tiles(324, seed=3)
NOW = 1_800_000_000.0
JUMP_M_S = 55.0  # the contract's jump check


def speeds_m_s(w: walks.Walks) -> np.ndarray:
    dy = np.diff(w.lat, axis=1) * walks.M_PER_DEG
    dx = np.diff(w.lng, axis=1) * walks.M_PER_DEG * np.cos(np.radians(w.lat[:, 1:]))
    return np.asarray(np.hypot(dx, dy) / np.diff(w.ts, axis=1))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), devices=st.integers(1, 6), pings=st.integers(2, 120))
def test_each_device_pings_on_in_time_at_walking_speed(seed: int, devices: int, pings: int) -> None:
    w = walks.make(FENCES, devices, pings, NOW, seed=seed)
    assert (w.devices, w.pings) == (devices, pings)
    steps = np.diff(w.ts, axis=1)
    assert np.all(steps >= walks.EVERY_S[0] - 1e-6)
    assert np.all(steps <= walks.EVERY_S[1] + 1e-6)
    assert np.allclose(steps, steps[:, :1])  # each device its own steady interval
    assert np.allclose(w.ts[:, -1], NOW)
    assert np.all((w.accuracy_m >= walks.ACCURACY_M[0] - 0.05) & (w.accuracy_m <= 40.05))
    # GPS noise aside (its spread is the accuracy), nobody moves like a car
    assert np.mean(speeds_m_s(w) > JUMP_M_S) <= 0.001


def test_the_same_arguments_give_the_same_walks() -> None:
    a, b = (walks.make(FENCES, 3, 50, NOW, seed=5) for _ in range(2))
    assert np.array_equal(a.lat, b.lat)
    assert np.array_equal(a.ts, b.ts)
    assert not np.array_equal(a.lat, walks.make(FENCES, 3, 50, NOW, seed=6).lat)


def test_devices_stay_in_stores_long_enough_for_entries() -> None:
    """Some devices are inside the same store for longer than the default dwell (120 s),
    and the devices spend time outside stores too."""
    w = walks.make(FENCES, 20, 200, NOW, seed=1)
    index = FenceIndex.build(FENCES)
    longest = []
    inside_any = 0
    for d in range(w.devices):
        answers = index.inside_many(w.lat[d], w.lng[d])
        inside_any += sum(map(bool, answers))
        best = run_start = 0.0
        current: frozenset[str] = frozenset()
        for k, ids in enumerate(answers):
            here = frozenset(ids)
            if not here & current:
                run_start = w.ts[d, k]
            current = here
            if here:
                best = max(best, w.ts[d, k] - run_start)
        longest.append(best)
    assert sum(t >= 120.0 for t in longest) >= 5
    assert 0.05 < inside_any / w.lat.size < 0.95


def test_the_track_is_the_real_one_in_metres() -> None:
    track = walks.track_m()
    assert track.shape[1] == 2
    assert np.array_equal(track[0], [0.0, 0.0])
    length_km = float(np.sum(np.hypot(*np.diff(track, axis=0).T))) / 1000
    assert 10 < length_km < 60  # a bus ride of 75 minutes through Limerick
    assert math.isfinite(length_km)

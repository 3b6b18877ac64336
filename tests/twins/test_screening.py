"""Screening, written once and run on the reference (``screen`` then ``record``, ping
after ping) and on its batch twins (``screen_in_turn``, ``screen_runs``): the verdicts
are the same to the bit, jump speeds a hair off their limit included."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.domain.model import DeviceState, Fix
from geofence.domain.screening import Screening
from geofence.engine import screening
from geofence.engine.screening import Columns, FloatArray, screen_in_turn, screen_runs
from tests.twins.conftest import REFERENCE, Run, Twin, laid_out
from tests.unit.test_screening import CASES, FRESH, HOME, NOW, RULES, ping


def test_every_case_of_the_table(twin: Twin) -> None:
    runs = [(state, [the_ping]) for _, state, the_ping, _, _ in CASES]
    verdicts = twin.screen(runs, NOW, RULES)
    assert [(v.status, v.reason) for v in verdicts] == [case[3:] for case in CASES]


# ts a few steps apart, so that runs repeat a ts and cross the too_old and future bounds
TS = st.sampled_from([NOW - 90_000, NOW - 86_400, NOW - 1800, NOW - 60, NOW, NOW + 300, NOW + 301])
ACCURACY = st.sampled_from([10.0, 10.0, 10.0, 100.0, 100.5, 0.0, -1.0, math.nan, math.inf])
MOCKED = st.sampled_from([False, False, False, True])


@st.composite
def runs_of_pings(draw: st.DrawFn) -> Run:
    """One device's state and pings in ts order: repeated ts, bad accuracy, mocked,
    glitches far away and moves at (a hair off) the jump speed of the gap before them."""
    state, prev_ts = DeviceState(), NOW - 2000.0
    if draw(st.booleans()):
        last_ts = draw(TS) - draw(st.sampled_from([0.0, 1.0]))
        prev_ts = last_ts - draw(st.sampled_from([0.0, 5.0, 1800.0]))
        state = DeviceState(last_ts=last_ts, last_fix=Fix(lat=HOME[0], lng=HOME[1], ts=prev_ts))
    times = sorted(draw(st.lists(TS, min_size=1, max_size=8, unique=draw(st.booleans()))))
    pings, north_m = [], 0.0
    for ts in times:
        dt = max(ts - prev_ts, 1.0)
        limit = RULES.jump_speed_mps if dt < RULES.jump_gap_s else RULES.jump_speed_after_gap_mps
        speed = draw(st.sampled_from([0.0, 1.0, limit, limit, 1e4]))
        hair = draw(st.sampled_from([1.0, 1 - 1e-12, 1 + 1e-12, -1.0]))
        north_m += speed * dt * hair
        pings.append(ping(ts, north_m=north_m, accuracy_m=draw(ACCURACY), mocked=draw(MOCKED)))
        prev_ts = ts
    return state, pings


@settings(max_examples=400, deadline=None)
@given(runs=st.lists(runs_of_pings(), min_size=1, max_size=5), now_off=st.sampled_from([0, 1]))
def test_runs_get_the_reference_verdicts(twin: Twin, runs: list[Run], now_off: int) -> None:
    now = NOW + now_off
    assert twin.screen(runs, now, RULES) == REFERENCE.screen(runs, now, RULES)


# --- only the array steps ------------------------------------------------------------------


def all_at_once(runs: list[Run], now: float) -> list[Screening] | None:
    pings, starts, states = laid_out(runs)
    return screen_runs(pings, Columns.of(pings), starts, states, now, RULES)


@pytest.mark.parametrize("error", [1e-11, -1e-11])
@settings(max_examples=200, deadline=None)
@given(runs=st.lists(runs_of_pings(), min_size=1, max_size=5))
def test_screen_runs_does_not_hang_on_the_last_bits_of_array_maths(
    error: float, runs: list[Run]
) -> None:
    """Array sines may round otherwise than math's: speeds at a hair from their limit are
    measured again one by one, so distances off by far more still give the same verdicts."""
    exact = screening._haversine_many

    def rounded_otherwise(*args: FloatArray) -> FloatArray:
        return exact(*args) * (1.0 + error)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(screening, "_haversine_many", rounded_otherwise)
        assert all_at_once(runs, NOW) == REFERENCE.screen(runs, NOW, RULES)


def test_screening_in_turn_takes_no_runs_and_empty_ones() -> None:
    assert screen_in_turn([], [], [], NOW, RULES) == []
    runs: list[Run] = [(FRESH, []), (FRESH, [ping(NOW)]), (FRESH, [])]
    assert screen_in_turn(*laid_out(runs), NOW, RULES) == REFERENCE.screen(runs, NOW, RULES)


def test_screen_runs_declines_what_it_cannot_answer_exactly() -> None:
    assert all_at_once([(FRESH, [])], NOW) is None
    assert all_at_once([(FRESH, [ping(math.nan)])], NOW) is None
    assert all_at_once([(FRESH, [ping(NOW, north_m=math.inf)])], NOW) is None
    assert all_at_once([(FRESH, [ping(NOW), ping(NOW - 1)])], NOW) is None
    in_order: list[Run] = [(FRESH, [ping(NOW)]), (FRESH, [ping(NOW - 1)])]  # each run in order
    assert all_at_once(in_order, NOW) == REFERENCE.screen(in_order, NOW, RULES)

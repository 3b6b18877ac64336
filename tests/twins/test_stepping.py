"""A device's pings through screening and the visit rules, written once and run on the
reference (``step`` ping after ping, every store of the catalogue measured) and on the
core entry ``outcome_of`` (its own lookups, or those of ``nears_of`` and the verdicts of
``screen_runs`` as a batch gives them): the same state, verdicts and events, on random
walks around random fences and through the Helsinki stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import shapely
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from geofence.domain.model import DeviceState, Fence, Fix, Ping, Rules, VisitRules
from geofence.domain.screening import Screening
from geofence.engine.screening import VERDICTS
from tests.twins.conftest import REFERENCE, Twin
from tests.twins.test_lookup import fence_shape, helsinki, offset, probe, scene

T0 = 1_700_000_000.0
HOME = (60.1699, 24.9384)
RULES = Rules(
    visits=VisitRules(
        dwell_s=60.0,
        max_gap_s=600.0,
        exit_s=30.0,
        visit_timeout_s=3600.0,
        entry_cooldown_s=1800.0,
    )
)
WALK = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def walk(draw: st.DrawFn, fences: Sequence[Fence]) -> list[Ping]:
    """A device walking in and out of the fences: steps of a few metres, a few seconds to
    half an hour apart, now and then a repeated ts, a bad fix or a leap to another fence."""
    lat, lng = draw(probe(fences))
    ts, pings = T0, []
    for _ in range(draw(st.integers(1, 24))):
        ts += draw(st.sampled_from([0.0, 5.0, 20.0, 45.0, 90.0, 700.0, 2000.0]))
        if draw(st.integers(0, 9)) == 0:
            lat, lng = draw(probe(fences))
        else:
            lat, lng = offset(lat, lng, draw(st.floats(-15, 15)), draw(st.floats(-15, 15)))
        accuracy = draw(st.sampled_from([5.0, 10.0, 10.0, 45.0, 150.0]))
        mocked = draw(st.integers(0, 19)) == 0
        pings.append(Ping(lat=lat, lng=lng, accuracy_m=accuracy, ts=ts, mocked=mocked))
    return pings


def assert_same_outcome(twin: Twin, fences: Sequence[Fence], pings: list[Ping]) -> int:
    """The twin's outcome of the pings' second half, from the state the first half left
    (so that visits are open from the start), is the reference's; the events, counted."""
    half = len(pings) // 2
    state, _ = REFERENCE.step(DeviceState(), pings[:half], pings[-1].ts, fences, RULES)
    now = pings[-1].ts + 1.0
    got = twin.step(state, pings[half:], now, fences, RULES)
    assert got == REFERENCE.step(state, pings[half:], now, fences, RULES)
    return sum(len(events) for _, events in got[1])


@WALK
@given(st.data(), scene())
def test_a_walk_gives_the_reference_outcome(twin: Twin, data: st.DataObject, sc: Any) -> None:
    fences, _, _ = sc
    events = assert_same_outcome(twin, fences, data.draw(walk(fences)))
    event("with events" if events else "without events")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_walk_through_helsinki_gives_the_reference_outcome(
    twin: Twin, data: st.DataObject
) -> None:
    fences = helsinki()
    assert_same_outcome(twin, fences, data.draw(walk(fences)))


def test_a_stay_in_a_helsinki_store_enters_and_leaves(twin: Twin) -> None:
    store = helsinki()[0]
    inside = shapely.point_on_surface(fence_shape(store))
    lat, lng = inside.y, inside.x
    away = offset(lat, lng, 400.0, 0.0)
    pings = [
        Ping(lat=lat, lng=lng, accuracy_m=5.0, ts=T0 + t) for t in (0.0, 30.0, 61.0, 120.0)
    ] + [Ping(lat=away[0], lng=away[1], accuracy_m=5.0, ts=T0 + t) for t in (200.0, 240.0)]
    state, steps = twin.step(DeviceState(), pings, T0 + 300.0, helsinki(), RULES)
    events = [(e.type, e.store_id) for _, evs in steps for e in evs]
    assert events == [("entry", store.id), ("exit", store.id)]
    assert state.visits == {}
    assert (state, steps) == REFERENCE.step(DeviceState(), pings, T0 + 300.0, helsinki(), RULES)


@st.composite
def passing(draw: st.DrawFn) -> tuple[DeviceState, list[Ping], list[Screening]]:
    """A device with no open visit, its pings in ts order and any verdicts on them."""
    entries = draw(st.dictionaries(st.sampled_from("abc"), st.floats(T0 - 30_000, T0)))
    flags = draw(st.dictionaries(st.sampled_from(["jump", "mocked"]), st.integers(1, 3)))
    fix = draw(st.none() | st.just(Fix(lat=HOME[0], lng=HOME[1], ts=T0 - 100)))
    state = DeviceState(
        last_ts=draw(st.none() | st.just(T0 - 50.0)),
        last_accepted_ts=draw(st.none() | st.just(T0 - 100.0)),
        last_fix=fix,
        last_entry_at=entries,
        flags=flags,
    )
    gaps = draw(st.lists(st.floats(1.0, 20_000.0), min_size=1, max_size=8))
    pings = [
        Ping(lat=HOME[0] + i * 1e-4, lng=HOME[1], accuracy_m=10.0, ts=T0 + sum(gaps[: i + 1]))
        for i in range(len(gaps))
    ]
    verdicts = draw(st.lists(st.sampled_from(VERDICTS), min_size=len(pings), max_size=len(pings)))
    return state, pings, verdicts


@settings(max_examples=300, deadline=None)
@given(passing())
def test_passing_by_is_stepping_ping_after_ping(
    twin: Twin, case: tuple[DeviceState, list[Ping], list[Screening]]
) -> None:
    state, pings, verdicts = case
    expected = REFERENCE.pass_by(state, pings, verdicts, RULES.visits)
    assert twin.pass_by(state, pings, verdicts, RULES.visits) == expected

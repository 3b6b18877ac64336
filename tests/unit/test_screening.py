"""Screening rules of contract §5: order, boundaries, state updates, glitch cost."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.domain.model import DeviceState, Fix, Ping, ScreeningRules
from geofence.domain.screening import (
    EARTH_RADIUS_M,
    Screening,
    haversine_m,
    record,
    screen,
)

RULES = ScreeningRules()
NOW = 1_700_000_000.0
HOME = (60.1699, 24.9384)
METRES_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180


def ping(
    ts: float,
    *,
    north_m: float = 0.0,
    accuracy_m: float = 10.0,
    mocked: bool = False,
) -> Ping:
    lat = HOME[0] + north_m / METRES_PER_DEG_LAT
    return Ping(lat=lat, lng=HOME[1], accuracy_m=accuracy_m, ts=ts, mocked=mocked)


def seen(last_ts: float, *, fix_ts: float | None = None) -> DeviceState:
    """A device last seen (and fixed) at HOME."""
    fix_at = last_ts if fix_ts is None else fix_ts
    return DeviceState(
        last_ts=last_ts,
        last_fix=Fix(lat=HOME[0], lng=HOME[1], ts=fix_at),
        last_accepted_ts=fix_at,
    )


FRESH = DeviceState()
RECENT = seen(NOW - 60)

# each case: its name, the state, the ping, the status and the reason it expects
CASES = [
    ("first ping", FRESH, ping(NOW), "accepted", None),
    ("duplicate ts", RECENT, ping(NOW - 60), "ignored", "stale"),
    ("older ts", RECENT, ping(NOW - 61), "ignored", "stale"),
    ("just later", RECENT, ping(NOW - 59.999), "accepted", None),
    ("too old", FRESH, ping(NOW - 86_400.001), "ignored", "too_old"),
    ("exactly 24 h old", FRESH, ping(NOW - 86_400), "accepted", None),
    ("future", FRESH, ping(NOW + 300.001), "ignored", "future"),
    ("exactly 300 s ahead", FRESH, ping(NOW + 300), "accepted", None),
    ("accuracy at max", FRESH, ping(NOW, accuracy_m=100.0), "accepted", None),
    ("accuracy above max", FRESH, ping(NOW, accuracy_m=100.01), "flagged", "inaccurate"),
    ("accuracy zero", FRESH, ping(NOW, accuracy_m=0.0), "flagged", "inaccurate"),
    ("accuracy negative", FRESH, ping(NOW, accuracy_m=-5.0), "flagged", "inaccurate"),
    ("accuracy NaN", FRESH, ping(NOW, accuracy_m=math.nan), "flagged", "inaccurate"),
    ("accuracy inf", FRESH, ping(NOW, accuracy_m=math.inf), "flagged", "inaccurate"),
    ("tiny accuracy", FRESH, ping(NOW, accuracy_m=0.001), "accepted", None),
    ("mocked", FRESH, ping(NOW, mocked=True), "flagged", "mocked"),
    # 60 s after the fix: 55 m/s is 3300 m.
    ("speed just under 55", RECENT, ping(NOW, north_m=3299), "accepted", None),
    ("speed just over 55", RECENT, ping(NOW, north_m=3301), "flagged", "jump"),
    # 30 min after the fix: 300 m/s is 540 km.
    ("gap, under 300", seen(NOW - 1800), ping(NOW, north_m=539_900), "accepted", None),
    ("gap, over 300", seen(NOW - 1800), ping(NOW, north_m=540_100), "flagged", "jump"),
    ("almost a gap, 100 m/s", seen(NOW - 1799), ping(NOW, north_m=179_900), "flagged", "jump"),
    ("gap, 100 m/s", seen(NOW - 1800), ping(NOW, north_m=180_000), "accepted", None),
    # The fix, not last_ts, is the reference: last ping was flagged inaccurate.
    (
        "fix older than last_ts",
        seen(NOW - 5, fix_ts=NOW - 1800),
        ping(NOW, north_m=200_000),
        "accepted",
        None,
    ),
    # Precedence: the first rule in the contract's order wins.
    ("stale before too_old", seen(NOW - 90_000), ping(NOW - 90_000), "ignored", "stale"),
    ("stale before inaccurate", RECENT, ping(NOW - 60, accuracy_m=500), "ignored", "stale"),
    ("too_old before inaccurate", FRESH, ping(NOW - 90_000, accuracy_m=500), "ignored", "too_old"),
    ("future before mocked", FRESH, ping(NOW + 900, mocked=True), "ignored", "future"),
    (
        "inaccurate before mocked",
        FRESH,
        ping(NOW, accuracy_m=0, mocked=True),
        "flagged",
        "inaccurate",
    ),
    (
        "inaccurate before jump",
        RECENT,
        ping(NOW, north_m=1e6, accuracy_m=101),
        "flagged",
        "inaccurate",
    ),
    ("mocked before jump", RECENT, ping(NOW, north_m=1e6, mocked=True), "flagged", "mocked"),
]


@pytest.mark.parametrize(
    ("state", "the_ping", "status", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_screen(state: DeviceState, the_ping: Ping, status: str, reason: str | None) -> None:
    assert screen(the_ping, state, NOW, RULES) == Screening(status, reason)  # type: ignore[arg-type]


def test_rules_are_configurable() -> None:
    rules = ScreeningRules(max_accuracy_m=20.0, too_old_s=60.0, future_s=0.0)
    assert screen(ping(NOW, accuracy_m=25), FRESH, NOW, rules).reason == "inaccurate"
    assert screen(ping(NOW - 61), FRESH, NOW, rules).reason == "too_old"
    assert screen(ping(NOW + 0.5), FRESH, NOW, rules).reason == "future"


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, abs=1)
    assert haversine_m(*HOME, *HOME) == 0.0
    assert haversine_m(0, -179.5, 0, 179.5) == pytest.approx(111_195, abs=1)


def test_record_ignored_changes_nothing() -> None:
    assert record(RECENT, ping(NOW - 60), Screening("ignored", "stale")) is RECENT


def test_record_accepted() -> None:
    after = record(RECENT, ping(NOW, north_m=10), Screening("accepted"))
    assert after.last_ts == after.last_accepted_ts == NOW
    assert after.last_fix is not None
    assert after.last_fix.ts == NOW
    assert after.flags == {}


@pytest.mark.parametrize("reason", ["inaccurate", "mocked"])
def test_record_flagged_keeps_fix(reason: str) -> None:
    after = record(RECENT, ping(NOW), Screening("flagged", reason))  # type: ignore[arg-type]
    assert after.last_ts == NOW
    assert after.last_fix == RECENT.last_fix
    assert after.last_accepted_ts == RECENT.last_accepted_ts
    assert after.flags == {reason: 1}


def test_record_jump_moves_fix_and_counts() -> None:
    state = record(RECENT, ping(NOW, north_m=1e6), Screening("flagged", "jump"))
    state = record(state, ping(NOW + 1, north_m=2e6), Screening("flagged", "jump"))
    assert state.last_fix is not None
    assert state.last_fix.ts == NOW + 1
    assert state.last_accepted_ts == RECENT.last_accepted_ts
    assert state.flags == {"jump": 2}


# -- one glitch costs at most two flagged pings; a relocation is accepted from its 2nd ping


def run(pings: list[Ping]) -> list[Screening]:
    state, verdicts = DeviceState(), []
    for p in pings:
        verdict = screen(p, state, p.ts, RULES)
        state = record(state, p, verdict)
        verdicts.append(verdict)
    return verdicts


@st.composite
def tracks(draw: st.DrawFn, start_ts: float = NOW, start_north_m: float = 0.0) -> list[Ping]:
    """A plausible track: at most 50 m/s, seconds to ten minutes apart, northwards."""
    n = draw(st.integers(min_value=2, max_value=12))
    ts, north_m, pings = start_ts, start_north_m, []
    for _ in range(n):
        pings.append(ping(ts, north_m=north_m, accuracy_m=draw(st.floats(1, 100))))
        dt = draw(st.floats(min_value=1, max_value=600))
        ts += dt
        north_m += draw(st.floats(min_value=-50, max_value=50)) * dt
    return pings


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_glitch_costs_at_most_two_flagged_pings(data: st.DataObject) -> None:
    track = data.draw(tracks())
    k = data.draw(st.integers(min_value=0, max_value=len(track) - 1))
    off_m = data.draw(st.floats(min_value=-2.5e6, max_value=2.5e6))
    glitch = ping(track[k].ts, north_m=off_m, accuracy_m=track[k].accuracy_m)
    verdicts = run([*track[:k], glitch, *track[k + 1 :]])
    flagged = [i for i, v in enumerate(verdicts) if v.status != "accepted"]
    assert set(flagged) <= {k, k + 1}
    assert all(v.reason in (None, "jump") for v in verdicts)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_relocation_is_accepted_from_its_second_ping(data: st.DataObject) -> None:
    before = data.draw(tracks())
    gap_s = data.draw(st.floats(min_value=1, max_value=4 * 3600))
    away_m = data.draw(st.floats(min_value=-5e6, max_value=2.5e6))
    after = data.draw(tracks(start_ts=before[-1].ts + gap_s, start_north_m=away_m))
    verdicts = run([*before, *after])
    assert all(v.status == "accepted" for v in verdicts[: len(before)])
    assert all(v.status == "accepted" for v in verdicts[len(before) + 1 :])
    first = verdicts[len(before)]
    assert first.status == "accepted" or first.reason == "jump"

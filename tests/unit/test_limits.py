"""Token buckets: burst, refill, the wait a refused caller is told, and bounded memory."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.limits import Buckets, Rate, retry_after_s

T0 = 1_000.0
RATE = Rate(per_s=2.0, burst=20)


def served(buckets: Buckets, key: str, now: float, times: int) -> int:
    return sum(buckets.take(key, now) == 0.0 for _ in range(times))


def test_a_new_caller_gets_its_burst_at_once_then_is_refused() -> None:
    buckets = Buckets(RATE)
    assert served(buckets, "a", T0, 25) == 20
    assert buckets.take("a", T0) == pytest.approx(0.5)  # one token at 2 a second


def test_tokens_come_back_at_the_rate_and_never_past_the_burst() -> None:
    buckets = Buckets(RATE)
    served(buckets, "a", T0, 20)
    assert buckets.tokens("a", T0 + 1.0) == pytest.approx(2.0)
    assert served(buckets, "a", T0 + 1.0, 5) == 2
    assert buckets.tokens("a", T0 + 3600) == 20
    assert served(buckets, "a", T0 + 3600, 30) == 20


def test_a_refused_request_takes_nothing() -> None:
    buckets = Buckets(Rate(per_s=1.0, burst=1))
    assert buckets.take("a", T0) == 0.0
    for dt in (0.1, 0.2, 0.5, 0.9):
        assert buckets.take("a", T0 + dt) == pytest.approx(1.0 - dt)
    assert buckets.take("a", T0 + 1.0) == 0.0


def test_callers_are_independent() -> None:
    buckets = Buckets(RATE)
    served(buckets, "flood", T0, 100)
    assert buckets.take("flood", T0) > 0
    assert served(buckets, "quiet", T0, 20) == 20


@pytest.mark.parametrize(
    ("wait_s", "header"), [(0.0001, 1), (0.5, 1), (1.0, 1), (1.0001, 2), (9.5, 10), (10.0, 10)]
)
def test_retry_after_is_whole_seconds_never_early(wait_s: float, header: int) -> None:
    assert retry_after_s(wait_s) == header


def test_a_caller_that_waits_its_retry_after_is_served() -> None:
    buckets = Buckets(Rate(per_s=0.3, burst=3))
    served(buckets, "a", T0, 3)
    wait_s = buckets.take("a", T0 + 0.7)
    assert wait_s > 0
    assert buckets.take("a", T0 + 0.7 + retry_after_s(wait_s)) == 0.0


@pytest.mark.parametrize(("per_s", "burst"), [(0, 5), (-1, 5), (math.nan, 5), (1, 0.5), (1, 0)])
def test_a_rate_that_could_serve_nobody_is_refused(per_s: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"a rate must|a burst must"):
        Rate(per_s=per_s, burst=burst)


# memory


def test_idle_buckets_are_dropped_once_they_are_full_again() -> None:
    buckets = Buckets(RATE)  # refills from empty in 10 s
    for i in range(1000):
        buckets.take(f"d{i}", T0 + i * 0.001)
    assert len(buckets) == 1000
    buckets.take("late", T0 + 10.5)  # those seen in the first 0.5 s are full by now
    assert len(buckets) == 1000 - 501 + 1
    buckets.take("later", T0 + 11)
    assert len(buckets) == 2  # only the callers of the last 10 s


def test_a_busy_caller_is_kept_however_old_its_first_request() -> None:
    buckets = Buckets(RATE)
    for second in range(60):
        for _ in range(3):  # one more a second than the rate: empty after 20 s
            buckets.take("busy", T0 + second)
        buckets.take(f"once-{second}", T0 + second)
    assert buckets.take("busy", T0 + 59.1) > 0
    assert len(buckets) == 1 + 10  # busy and the one-off callers of the last 10 s


def test_the_table_never_holds_more_than_max_keys() -> None:
    buckets = Buckets(RATE, max_keys=100)
    for i in range(10_000):
        buckets.take(f"d{i}", T0)
        assert len(buckets) <= 100
    assert buckets.tokens("d9999", T0) == RATE.burst - 1  # the latest are the ones kept
    assert buckets.tokens("d0", T0) == RATE.burst  # the oldest went: a fresh bucket again


# properties


@st.composite
def walks(draw: st.DrawFn) -> tuple[Rate, list[tuple[str, float]]]:
    """A rate and requests of a few callers at non-decreasing times: bursts at one
    instant, and pauses measured in the time one token takes to come back."""
    rate = Rate(per_s=draw(st.floats(0.01, 100)), burst=draw(st.integers(1, 4)))
    tokens = st.one_of(st.just(0.0), st.sampled_from([0.5, 1.0, 3.0]), st.floats(0, 8))
    steps = draw(st.lists(st.tuples(st.sampled_from("ab"), tokens), max_size=200))
    now, out = T0, []
    for key, gap_tokens in steps:
        now += gap_tokens / rate.per_s
        out.append((key, now))
    return rate, out


class NeverForgets:
    """The reference: the same buckets with no eviction at all."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.held: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float) -> bool:
        tokens, at = self.held.get(key, (self.rate.burst, now))
        if now - at >= self.rate.refill_s:
            tokens = self.rate.burst
        tokens = min(self.rate.burst, tokens + (now - at) * self.rate.per_s)
        ok = tokens >= 1 - 1e-9
        self.held[key] = (max(0.0, tokens - 1) if ok else tokens, now)
        return ok


@given(walk=walks())
def test_dropping_idle_buckets_never_changes_a_decision(
    walk: tuple[Rate, list[tuple[str, float]]],
) -> None:
    rate, steps = walk
    buckets, reference = Buckets(rate), NeverForgets(rate)
    for key, now in steps:
        assert (buckets.take(key, now) == 0.0) == reference.take(key, now)


@given(walk=walks())
def test_no_window_serves_more_than_burst_plus_rate_times_its_length(
    walk: tuple[Rate, list[tuple[str, float]]],
) -> None:
    rate, steps = walk
    buckets = Buckets(rate)
    times = [now for key, now in steps if key == "a" and buckets.take(key, now) == 0.0]
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            allowed = rate.burst + rate.per_s * (times[j] - start)
            assert j - i + 1 <= allowed + 1e-6


@given(walk=walks())
def test_a_refused_caller_is_served_when_it_comes_back_after_the_wait(
    walk: tuple[Rate, list[tuple[str, float]]],
) -> None:
    rate, steps = walk
    buckets = Buckets(rate)
    for key, now in steps:
        wait_s = buckets.take(key, now)
        if wait_s > 0:
            assert wait_s <= 1 / rate.per_s + 1e-9
            probe = copy.deepcopy(buckets)  # the walk itself goes on untouched
            assert probe.take(key, now + wait_s) == 0.0

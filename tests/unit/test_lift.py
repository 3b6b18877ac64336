"""The lift over a control group (issue 27): Wilson and Newcombe intervals, checked
against the published examples, their properties, and a known effect recovered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.lift import NO_DIFFERENCE, TOO_SMALL, lift, newcombe, wilson


# Newcombe (1998), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Stat Med 17:873-890, Table II, method 10
@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
    ],
)
def test_newcombe_matches_the_published_examples(
    x1: int, n1: int, x2: int, n2: int, low: float, high: float
) -> None:
    got = newcombe(x1, n1, x2, n2)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_matches_the_published_example() -> None:
    # from Newcombe 1998, "Two-sided confidence intervals for the single proportion":
    # the Wilson interval of 81 successes in 263 trials
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(0, 10)[0] == 0.0


counts = st.integers(1, 5_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@given(counts, counts)
def test_the_interval_holds_the_difference_and_stays_in_bounds(
    treated: tuple[int, int], control: tuple[int, int]
) -> None:
    (x1, n1), (x2, n2) = treated, control
    low, high = newcombe(x1, n1, x2, n2)
    diff = x1 / n1 - x2 / n2
    assert -1.0 <= low <= diff + 1e-12
    assert diff - 1e-12 <= high <= 1.0


@given(counts)
def test_equal_groups_give_an_interval_around_zero(group: tuple[int, int]) -> None:
    x, n = group
    low, high = newcombe(x, n, x, n)
    assert low <= 0 <= high
    assert low == pytest.approx(-high)


def simulated(rate: float, n: int, rng: random.Random) -> tuple[int, int]:
    return n, sum(rng.random() < rate for _ in range(n))


def test_a_known_effect_is_recovered() -> None:
    rng = random.Random(27)
    row = lift("o1", simulated(0.12, 20_000, rng), simulated(0.08, 20_000, rng))
    assert row["lift"] == pytest.approx(0.04, abs=0.008)
    interval = row["interval"]
    assert interval["method"] == "newcombe"
    assert interval["low"] < 0.04 < interval["high"]
    assert interval["low"] > 0
    assert row["enough_data"] is True
    assert row["relative_lift"] == pytest.approx(0.5, abs=0.15)
    assert row["treated"]["rate"] == pytest.approx(0.12, abs=0.01)


@pytest.mark.parametrize(
    ("treated", "control"),
    [((20, 3), (20, 1)), ((1_000, 120), (29, 2)), ((1_000, 4), (1_000, 0)), ((0, 0), (50, 5))],
)
def test_small_samples_are_not_enough(treated: tuple[int, int], control: tuple[int, int]) -> None:
    row = lift("o1", treated, control)
    assert row["enough_data"] is False
    assert row["note"] == TOO_SMALL


def test_an_interval_across_zero_says_no_difference_yet() -> None:
    row = lift("o1", (1_000, 100), (1_000, 95))
    assert row["enough_data"] is False
    assert row["note"] == NO_DIFFERENCE
    assert row["interval"]["low"] < 0 < row["interval"]["high"]


def test_no_entries_in_a_group_has_no_rate_and_no_lift() -> None:
    row = lift("o1", (100, 10), (0, 0))
    assert row["control"]["rate"] is None
    assert row["lift"] is None
    assert row["interval"]["low"] is None

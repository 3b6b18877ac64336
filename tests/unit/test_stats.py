"""The funnel (contract §6, stats): counter names, hourly buckets and the rows with rates."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.stats import (
    BUCKET_S,
    COLUMNS,
    STAGES,
    bucket_of,
    buckets,
    counter,
    funnel,
    lifts,
    series,
    series_starts,
    tally,
)

H = 1_781_514_000.0  # an hour boundary
assert H % BUCKET_S == 0


def test_counter_names() -> None:
    assert counter("entries", "store", "s1") == "entries|store|s1"
    assert counter("redeemed", "offer", "a|b") == "redeemed|offer|a|b"


@pytest.mark.parametrize(
    ("ts", "bucket"),
    [
        (H, H),
        (H + 0.5, H),
        (H + 3_599.999, H),
        (H + 3_600, H + 3_600),
        (H - 0.001, H - 3_600),
        (0.0, 0),
    ],
)
def test_bucket_of(ts: float, bucket: float) -> None:
    assert bucket_of(ts) == bucket
    assert isinstance(bucket_of(ts), int)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (H, H + 3_600, [H]),
        (H, H + 3_600.5, [H, H + 3_600]),
        (H + 10, H + 20, [H]),
        (H - 1, H + 1, [H - 3_600, H]),
        (H + 1_800, H + 3 * 3_600, [H, H + 3_600, H + 7_200]),
        (H, H + 7_200, [H, H + 3_600]),
        (H + 3_599, H + 3_600, [H]),
        (H, H, []),
        (H + 10, H, []),
    ],
)
def test_buckets_of_a_half_open_window(start: float, end: float, expected: list[float]) -> None:
    assert buckets(start, end) == expected


@given(st.integers(0, 1_000_000), st.integers(1, 400 * 24))  # hours since 1970
def test_a_window_of_whole_hours_has_one_bucket_an_hour(hour: int, hours: int) -> None:
    start = hour * BUCKET_S
    assert buckets(start, start + hours * BUCKET_S) == [start + i * BUCKET_S for i in range(hours)]


@given(st.integers(0, 4_000_000_000_000), st.integers(0, 40 * BUCKET_S * 1_000))
def test_buckets_hold_the_first_and_last_moment(start_ms: int, length_ms: int) -> None:
    start, end = start_ms / 1_000, (start_ms + length_ms) / 1_000
    found = buckets(start, end)
    if end <= start:
        assert found == []
        return
    assert found[0] == bucket_of(start)
    assert found[-1] < end
    assert all(b - a == BUCKET_S for a, b in itertools.pairwise(found))
    assert found[-1] + BUCKET_S >= end


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (253_402_293_600.0, 253_402_297_200.0, [253_402_293_600]),  # 9999-12-31T22-23Z
        (H - 1, math.nextafter(H, math.inf), [H - 3_600, H]),
    ],
    ids=["end-on-the-hour-in-9999", "end-just-after-the-hour"],
)
def test_buckets_are_exact_at_float_resolution(
    start: float, end: float, expected: list[float]
) -> None:
    assert buckets(start, end) == expected


def test_tally() -> None:
    assert tally(["a", "b", "a", "a"]) == {"a": 3, "b": 1}
    assert tally([]) == {}
    assert tally(iter(["x"])) == {"x": 1}


# --- the funnel ---------------------------------------------------------------------------


def test_funnel_rows_with_rates() -> None:
    counts = {
        counter("entries", "store", "s1"): 200,
        counter("notifications", "store", "s1"): 50,
        counter("delivered", "store", "s1"): 40,
        counter("opened", "store", "s1"): 30,
        counter("redeemed", "store", "s1"): 7,
    }
    assert funnel(counts, "store") == [
        {
            "store_id": "s1",
            "entries": 200,
            "notifications": 50,
            "delivered": 40,
            "opened": 30,
            "redeemed": 7,
            "rates": {
                "notifications_rate": 0.25,
                "delivered_rate": 0.8,
                "opened_rate": 0.75,
                "redeemed_rate": 0.2333,
            },
        }
    ]


def test_funnel_rows_only_for_the_requested_kind_sorted_by_id() -> None:
    counts = {
        counter("entries", "store", "s2"): 1,
        counter("entries", "offer", "o1"): 5,
        counter("entries", "store", "s10"): 2,
        counter("notifications", "offer", "o1"): 1,
        counter("entries", "store", "s1"): 3,
    }
    assert [r["store_id"] for r in funnel(counts, "store")] == ["s1", "s10", "s2"]
    [row] = funnel(counts, "offer")
    assert (row["offer_id"], row["entries"], row["notifications"]) == ("o1", 5, 1)
    assert "store_id" not in row
    assert funnel({}, "store") == []


def test_missing_stages_are_zero_and_a_zero_denominator_has_no_rate() -> None:
    [row] = funnel({counter("delivered", "offer", "o1"): 3}, "offer")
    assert {stage: row[stage] for stage in STAGES} == {
        "entries": 0,
        "notifications": 0,
        "delivered": 3,
        "opened": 0,
        "redeemed": 0,
    }
    assert row["rates"] == {
        "notifications_rate": None,
        "delivered_rate": None,
        "opened_rate": 0.0,
        "redeemed_rate": None,
    }


def test_rates_are_rounded_to_four_places() -> None:
    counts = {counter("entries", "store", "s"): 3, counter("notifications", "store", "s"): 2}
    [row] = funnel(counts, "store")
    assert row["rates"]["notifications_rate"] == 0.6667  # type: ignore[index]
    counts = {counter("entries", "store", "s"): 7, counter("notifications", "store", "s"): 1}
    [row] = funnel(counts, "store")
    assert row["rates"]["notifications_rate"] == 0.1429  # type: ignore[index]


def test_a_rate_can_exceed_one() -> None:
    """Receipts of notifications made before the window still count inside it."""
    counts = {counter("notifications", "offer", "o"): 1, counter("delivered", "offer", "o"): 2}
    [row] = funnel(counts, "offer")
    assert row["rates"]["delivered_rate"] == 2.0  # type: ignore[index]


def test_ids_with_a_bar_keep_it() -> None:
    counts = {
        counter("entries", "store", "a|b"): 4,
        counter("notifications", "store", "a|b"): 1,
        counter("entries", "store", "a"): 1,
    }
    rows = funnel(counts, "store")
    assert [(r["store_id"], r["entries"], r["notifications"]) for r in rows] == [
        ("a", 1, 0),
        ("a|b", 4, 1),
    ]


def test_unknown_stages_are_left_out() -> None:
    counts = {"clicked|store|s1": 9, counter("entries", "store", "s1"): 1, "clicked|store|s2": 1}
    rows = funnel(counts, "store")
    assert [r["store_id"] for r in rows] == ["s1"]
    assert "clicked" not in rows[0]


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(STAGES), st.sampled_from(["store", "offer"]), st.text("ab|")),
        st.integers(0, 1_000),
        max_size=12,
    )
)
def test_funnel_keeps_every_count_of_its_kind(
    raw: dict[tuple[str, str, str], int],
) -> None:
    counts = {f"{stage}|{by}|{key}": n for (stage, by, key), n in raw.items()}
    rows = funnel(counts, "offer")
    ids = [r["offer_id"] for r in rows]
    assert ids == sorted({key for (_, by, key) in raw if by == "offer"})
    for stage in STAGES:
        expected = sum(n for (s, by, _), n in raw.items() if s == stage and by == "offer")
        assert sum(int(r[stage]) for r in rows) == expected  # type: ignore[call-overload]


# --- time series (issue 27) ------------------------------------------------------------------

DAY0 = 1_781_481_600  # a UTC midnight
assert DAY0 % 86_400 == 0


def test_series_starts_of_hours_and_utc_days() -> None:
    assert series_starts(H + 10, H + 2 * 3_600 + 1, "hour") == [H, H + 3_600, H + 7_200]
    assert series_starts(DAY0 + 3_600, DAY0 + 86_400 + 1, "day") == [DAY0, DAY0 + 86_400]
    assert series_starts(H, H, "day") == []


def test_counts_land_in_their_day_and_every_day_is_there() -> None:
    per_hour = {
        DAY0 + 3_600: {counter("entries", "store", "s1"): 3},
        DAY0 + 23 * 3_600: {counter("entries", "store", "s1"): 2},
        DAY0 + 2 * 86_400: {
            counter("entries", "store", "s1"): 1,
            counter("control", "store", "s1"): 1,
            counter("conversions", "store", "s2"): 4,
        },
    }
    starts = series_starts(DAY0, DAY0 + 3 * 86_400, "day")
    lines = series(per_hour, "store", starts, "day")
    assert [line["key"] for line in lines] == ["s1", "s2"]
    s1, s2 = lines
    assert [p["at"] for p in s1["points"]] == [
        "2026-06-15T00:00:00Z",
        "2026-06-16T00:00:00Z",
        "2026-06-17T00:00:00Z",
    ]
    assert [p["entries"] for p in s1["points"]] == [5, 0, 1]
    assert [p["control"] for p in s1["points"]] == [0, 0, 1]
    assert [p["conversions"] for p in s2["points"]] == [0, 0, 4]
    assert set(s1["points"][1]) == {"at", *COLUMNS}


def test_hourly_points_and_a_key_with_nothing_counted() -> None:
    per_hour = {int(H) + 3_600: {counter("notifications", "offer", "o1"): 2}}
    lines = series(per_hour, "offer", series_starts(H, H + 3 * 3_600, "hour"), "hour", ("o9",))
    assert [(line["key"], [p["notifications"] for p in line["points"]]) for line in lines] == [
        ("o1", [0, 2, 0]),
        ("o9", [0, 0, 0]),
    ]


def test_lifts_read_the_groups_from_the_counters() -> None:
    counts = {
        counter("notifications", "offer", "o1"): 400,
        counter("conversions-treated", "offer", "o1"): 48,
        counter("control", "offer", "o1"): 100,
        counter("conversions-control", "offer", "o1"): 8,
    }
    [row] = lifts(counts, ["o1", "o1"])
    assert row["treated"] == {"entries": 400, "conversions": 48, "rate": 0.12}
    assert row["control"] == {"entries": 100, "conversions": 8, "rate": 0.08}
    assert row["lift"] == pytest.approx(0.04)

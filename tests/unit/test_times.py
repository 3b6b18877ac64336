"""The one time format of what the service returns: RFC 3339 UTC (``domain.times``)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.model import VisitEvent
from geofence.domain.times import (
    MAX_EPOCH_S,
    format_time,
    is_time_field,
    parse_time,
    parse_time_param,
    with_times,
)
from geofence.engine.device import PingResult


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_796_581_800, "2026-12-06T18:30:00Z"),
        (1_796_581_800.5, "2026-12-06T18:30:00.5Z"),
        (1_796_581_800.25, "2026-12-06T18:30:00.25Z"),
        (1_796_581_800.000001, "2026-12-06T18:30:00.000001Z"),
        (MAX_EPOCH_S, "9999-12-31T23:59:59Z"),
    ],
)
def test_format_time(ts: float, text: str) -> None:
    assert format_time(ts) == text


@given(st.integers(0, MAX_EPOCH_S * 10**6))
def test_parse_reads_back_what_format_writes_to_the_microsecond(micros: int) -> None:
    ts = micros / 10**6
    assert parse_time(format_time(ts)) == ts


@pytest.mark.parametrize(
    "name",
    ["at", "arrived_at", "created_at", "now", "ts", "last_ts", "departing_since", "device_sent"],
)
def test_time_fields(name: str) -> None:
    assert is_time_field(name)


@pytest.mark.parametrize("name", ["dwell_s", "ttl_s", "window_s", "attempts", "status", "data"])
def test_not_time_fields(name: str) -> None:
    assert not is_time_field(name)


def test_with_times_converts_numbers_under_time_fields_only() -> None:
    doc: dict[str, Any] = {
        "at": 0,
        "dwell_s": 60.0,
        "stores": [{"store_id": "s", "arrived_at": 60.5, "confirmed": True}],
        "last_entry_at": {"s1": 120, "s2": None},
        "device_sent": [0.0, 60.0],
        "visit": {"departing_since": None, "flag": False},
        "from": "2026-12-06T18:30:00Z",
        "count": 3,
    }
    assert with_times(doc) == {
        "at": "1970-01-01T00:00:00Z",
        "dwell_s": 60.0,
        "stores": [{"store_id": "s", "arrived_at": "1970-01-01T00:01:00.5Z", "confirmed": True}],
        "last_entry_at": {"s1": "1970-01-01T00:02:00Z", "s2": None},
        "device_sent": ["1970-01-01T00:00:00Z", "1970-01-01T00:01:00Z"],
        "visit": {"departing_since": None, "flag": False},
        "from": "2026-12-06T18:30:00Z",
        "count": 3,
    }


def test_booleans_under_a_time_field_stay_booleans() -> None:
    assert with_times({"ends_at": {"open": True, "at": 1}}) == {
        "ends_at": {"open": True, "at": "1970-01-01T00:00:01Z"}
    }


def test_a_struct_with_nothing_to_convert_is_kept_as_it_is() -> None:
    quiet = PingResult(status="accepted", reason=None, events=[])
    out = with_times({"results": [quiet, quiet]})
    assert out["results"][0] is quiet
    assert out["results"][1] is quiet


def test_a_struct_with_times_is_encoded_as_the_api_writes_it() -> None:
    entry = VisitEvent(type="entry", store_id="s", at=180.0, arrived_at=60.0)
    result = PingResult(status="accepted", reason=None, events=[entry])
    assert msgspec.json.decode(msgspec.json.encode(with_times(result))) == {
        "status": "accepted",
        "reason": None,
        "events": [
            {
                "type": "entry",
                "store_id": "s",
                "at": "1970-01-01T00:03:00Z",
                "arrived_at": "1970-01-01T00:01:00Z",
            }
        ],
        "notifications": [],
    }


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        ("1780272000", 1_780_272_000.0),
        ("1780272000.5", 1_780_272_000.5),
        (1_780_272_000, 1_780_272_000.0),
        ("2026-06-01T00:00:00Z", 1_780_272_000.0),
    ],
)
def test_a_query_or_a_trace_may_give_epoch_seconds_as_text(
    value: str | float, epoch: float
) -> None:
    assert parse_time_param(value) == epoch


@pytest.mark.parametrize(
    "value",
    ["1780272000", "2026-06-01T00:00:00", "2026-06-01", "0001-01-01T00:00:00Z", -1, math.inf],
)
def test_a_body_time_is_rfc3339_with_an_offset_or_a_number_from_1970_to_9999(
    value: str | float,
) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|1970"):
        parse_time(value)


@pytest.mark.parametrize("text", ["-5", "1e9", "2026-06-01T00:00Z", "2026-13-01T00:00:00Z"])
def test_a_time_as_text_is_refused_unless_epoch_digits_or_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|1970|month"):
        parse_time_param(text)

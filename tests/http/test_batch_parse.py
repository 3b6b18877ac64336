"""A batch is decoded in one go when it can be; the answer is the same as ping by ping."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.http.errors import HTTPProblem
from geofence.http.pings import MAX_BATCH, BatchIn, _parse_all, _parse_one

good = st.fixed_dictionaries(
    {
        "device_id": st.sampled_from(["d1", "d2"]),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "accuracy_m": st.floats(0, 200),
        "ts": st.one_of(st.floats(0, 2e9), st.just("2026-11-23T10:00:00+02:00")),
    },
    optional={"mocked": st.booleans()},
)
bad = st.one_of(
    good.map(lambda p: {**p, "lat": 91.0}),
    good.map(lambda p: {**p, "ts": "yesterday"}),
    good.map(lambda p: {**p, "ts": "2026-11-23T10:00:00"}),  # no offset
    good.map(lambda p: {**p, "extra": 1}),
    good.map(lambda p: {k: v for k, v in p.items() if k != "device_id"}),
    st.just([]),
    st.just("ping"),
)


def one_by_one(body: bytes) -> list[Any]:
    batch = msgspec.json.decode(body, type=BatchIn)
    return [_parse_one(raw, i) for i, raw in enumerate(batch.pings)]


@given(pings=st.lists(st.one_of(good, good, bad), max_size=20))
def test_every_batch_parses_as_ping_by_ping(pings: list[Any]) -> None:
    body = msgspec.json.encode({"pings": pings})
    assert _parse_all(body) == one_by_one(body)


def test_too_many_pings_is_refused_whole() -> None:
    ping = {"device_id": "d1", "lat": 60.0, "lon": 24.0, "accuracy_m": 5, "ts": 1e9}
    with pytest.raises(HTTPProblem) as refused:
        _parse_all(msgspec.json.encode({"pings": [ping] * (MAX_BATCH + 1)}))
    assert refused.value.code == "batch-too-large"

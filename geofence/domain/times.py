"""The one time format of everything the service returns: RFC 3339 in UTC.

Inside, time is a float of epoch seconds (the domain computes with it); what leaves the
service (API answers, the pushed notification, the stdout lines) carries it as
``2026-12-06T18:30:00Z``, with as many fractional digits as it needs (at most 6, none for
a whole second). Which fields are times is told by their names, one rule for the answers
and for the OpenAPI document that describes them (``is_time_field``): ``at``, a name
ending in ``_at``, or one of ``TIME_NAMES``. Every number under such a field (a list of
times, a map of store id to time, a nested visit) is a time; durations end in ``_s``.

What comes in (a body's time, a query's ``?from=``, a trace's ``ts``) is read by
``parse_time``: RFC 3339 with an offset, or epoch seconds, between 1970 and 9999.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

# the time fields whose names do not end in ``_at``
TIME_NAMES: Final = frozenset(
    {"now", "ts", "last_ts", "last_accepted_ts", "departing_since", "device_sent", "per_offer_sent"}
)

MAX_EPOCH_S: Final = 253_402_300_799  # 9999-12-31T23:59:59Z

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_EXPECTED: Final = "expected RFC 3339 with an offset, or epoch seconds"


def format_time(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC: ``2026-12-06T18:30:00Z``, ``...:00.25Z``."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0")
    return text.rstrip(".") + "Z"


def parse_time(value: str | float) -> float:
    """RFC 3339 with an offset (``Z`` or ``±HH:MM``), or epoch seconds, as epoch seconds;
    ValueError for anything else or outside 1970..9999."""
    epoch = _rfc3339(value) if isinstance(value, str) else value
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        raise ValueError(_EXPECTED)  # noqa: TRY004 - a bad value, as the callers' contract says
    if not 0 <= epoch <= MAX_EPOCH_S:  # also refuses NaN and inf
        raise ValueError("must be between 1970 and 9999")
    return float(epoch)


def parse_time_param(value: str | float) -> float:
    """``parse_time``, also taking epoch seconds as text (a query, a receipt, a trace)."""
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    return parse_time(value)


def _rfc3339(value: str) -> float:
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(_EXPECTED)
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:  # Python reads at most microseconds: a finer fraction is cut, not refused
        moment = datetime.fromisoformat(f"{day}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError as e:
        raise ValueError(f"{value!r}: {e}") from None
    return moment.timestamp()


def is_time_field(name: str) -> bool:
    return name == "at" or name.endswith("_at") or name in TIME_NAMES


def with_times(doc: Any) -> Any:
    """``doc`` (JSON builtins and msgspec structs) with every number under a time field as
    RFC 3339. A struct that holds nothing to convert is kept as it is (msgspec encodes it
    faster than any copy): a batch's many results without an event cost next to nothing."""
    return _walk(doc, {})


def _walk(doc: Any, seen: dict[int, Any]) -> Any:
    if isinstance(doc, msgspec.Struct):
        return _struct(doc, seen)
    if isinstance(doc, dict):
        return {k: _timed(v) if is_time_field(k) else _walk(v, seen) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_walk(v, seen) for v in doc]
    return doc


def _struct(doc: msgspec.Struct, seen: dict[int, Any]) -> Any:
    """The same struct object met again (the shared result of a ping with no event) is
    looked at once."""
    key = id(doc)
    if key not in seen:
        seen[key] = doc if _plain(doc) else _walk(msgspec.to_builtins(doc), seen)
    return seen[key]


def _plain(doc: msgspec.Struct) -> bool:
    """Nothing inside to convert: no time field with a number, no non-empty container."""
    for name in doc.__struct_fields__:
        value = getattr(doc, name)
        if isinstance(value, (list, tuple, dict, msgspec.Struct)) and value:
            return False
        if is_time_field(name) and isinstance(value, (int, float)):
            return False
    return True


def _timed(value: Any) -> Any:
    """Below a time field every number is a time (booleans are not numbers here)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return format_time(value)
    if isinstance(value, dict):
        return {k: _timed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_timed(v) for v in value]
    return value

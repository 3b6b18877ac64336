"""The funnel (contract §6, stats): aggregate counters per hour, never per device.

A counter is named ``<stage>|<by>|<id>``: the stage of the funnel, whether it counts a
store or an offer, and that store's or offer's id. Counters live in hourly buckets (the
epoch second the hour starts at), so a window is the buckets it touches.

``entries`` of an offer are the entries at a store it targeted while it ran (active,
started, not ended): its audience. Each rate is a stage over the stage before it.
``control`` counts the entries held out by an offer's control group, ``conversions`` the
conversions attributed to an entry (either group); ``conversions-treated`` and
``conversions-control`` split them for the lift.

A time series (``series``) puts the counters of each hour, or each UTC day, side by
side: every bucket of the window is there, zeros included, so a chart has no gaps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from geofence.domain.lift import lift
from geofence.domain.times import format_time

BUCKET_S: Final = 3_600
DAY_S: Final = 86_400
MAX_WINDOW_S: Final = 400 * 86_400
STAGES: Final = ("entries", "notifications", "delivered", "opened", "redeemed")
OUTCOMES: Final = ("control", "conversions")  # beside the funnel: no rate of their own
COLUMNS: Final = STAGES + OUTCOMES
By = Literal["store", "offer"]
BYS: Final = ("store", "offer")
Stage = Literal["entries", "notifications", "delivered", "opened", "redeemed"]
Counted = Literal[
    "entries",
    "notifications",
    "delivered",
    "opened",
    "redeemed",
    "control",
    "conversions",
    "conversions-treated",
    "conversions-control",
]
GROUP_COUNTERS: Final[dict[str, Counted]] = {
    "treated": "conversions-treated",
    "control": "conversions-control",
}
Bucket = Literal["hour", "day"]
BUCKET_SIZES: Final[dict[str, int]] = {"hour": BUCKET_S, "day": DAY_S}
# the most points a series may have: a month of hours, the longest window of days
MAX_POINTS: Final[dict[str, int]] = {"hour": 24 * 31, "day": 400}


def counter(stage: Counted, by: By, key: str) -> str:
    return f"{stage}|{by}|{key}"


def bucket_of(ts: float) -> int:
    return int(ts // BUCKET_S) * BUCKET_S


def buckets(start: float, end: float) -> list[int]:
    """Every bucket that holds a moment of [start, end)."""
    if end <= start:
        return []
    last = math.ceil(end / BUCKET_S) * BUCKET_S - BUCKET_S  # the bucket holding end's past
    return list(range(bucket_of(start), last + 1, BUCKET_S))


def tally(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def summed(tables: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The counters of many buckets added up."""
    total: dict[str, int] = {}
    for table in tables:
        for name, n in table.items():
            total[name] = total.get(name, 0) + n
    return total


def funnel(counts: dict[str, int], by: By) -> list[dict[str, object]]:
    """One row per store (or offer) that has any count, by id, with the stage rates."""
    rows = _columns(counts, by, STAGES)
    return [_row(by, key, rows[key]) for key in sorted(rows)]


def _columns(
    counts: Mapping[str, int], by: By, columns: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    """The counts of each store (or offer) in ``columns``, zeros filled in."""
    rows: dict[str, dict[str, int]] = {}
    for name, n in counts.items():
        stage, kind, key = name.split("|", 2)
        if kind == by and stage in columns:
            rows.setdefault(key, dict.fromkeys(columns, 0))[stage] += n
    return rows


def _row(by: By, key: str, stages: dict[str, int]) -> dict[str, object]:
    rates = {
        f"{later}_rate": _rate(stages[later], stages[earlier])
        for earlier, later in itertools.pairwise(STAGES)
    }
    return {f"{by}_id": key, **stages, "rates": rates}


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


# --- time series -------------------------------------------------------------------------


def series_starts(start: float, end: float, bucket: Bucket) -> list[int]:
    """The start of every hour (or UTC day) that holds a moment of [start, end)."""
    size = BUCKET_SIZES[bucket]
    if end <= start:
        return []
    first = int(start // size) * size
    return list(range(first, math.ceil(end / size) * size, size))


def series(
    per_hour: Mapping[int, Mapping[str, int]],
    by: By,
    starts: list[int],
    bucket: Bucket,
    keys: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """One series per store (or offer) counted in the window, and each of ``keys`` even
    if not: a point per bucket start, zeros included."""
    size = BUCKET_SIZES[bucket]
    points: dict[str, dict[int, dict[str, int]]] = {key: {} for key in keys}
    for hour, counts in per_hour.items():
        at = int(hour // size) * size
        for key, columns in _columns(counts, by, COLUMNS).items():
            point = points.setdefault(key, {}).setdefault(at, dict.fromkeys(COLUMNS, 0))
            for column, n in columns.items():
                point[column] += n
    return [
        {"key": key, "points": [_point(at, points[key].get(at)) for at in starts]}
        for key in sorted(points)
    ]


def _point(at: int, columns: dict[str, int] | None) -> dict[str, Any]:
    return {"at": format_time(at), **(columns or dict.fromkeys(COLUMNS, 0))}


def lifts(counts: Mapping[str, int], offer_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The lift of each offer over its control group, from the window's counters."""
    return [_lift_of(counts, offer_id) for offer_id in sorted(set(offer_ids))]


def _lift_of(counts: Mapping[str, int], offer_id: str) -> dict[str, Any]:
    def n(stage: Counted) -> int:
        return counts.get(counter(stage, "offer", offer_id), 0)

    treated = (n("notifications"), n("conversions-treated"))
    return lift(offer_id, treated=treated, control=(n("control"), n("conversions-control")))

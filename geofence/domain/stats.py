"""The funnel (contract §6, stats): aggregate counters per hour, never per device.

A counter is named ``<stage>|<by>|<id>``: the stage of the funnel, whether it counts a
store or an offer, and that store's or offer's id. Counters live in hourly buckets (the
epoch second the hour starts at), so a window is the buckets it touches.

``entries`` of an offer are the entries at a store it targeted while it ran (active,
started, not ended): its audience. Each rate is a stage over the stage before it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Final, Literal

BUCKET_S: Final = 3_600
MAX_WINDOW_S: Final = 400 * 86_400
STAGES: Final = ("entries", "notifications", "delivered", "opened", "redeemed")
By = Literal["store", "offer"]
BYS: Final = ("store", "offer")
Stage = Literal["entries", "notifications", "delivered", "opened", "redeemed"]


def counter(stage: Stage, by: By, key: str) -> str:
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


def funnel(counts: dict[str, int], by: By) -> list[dict[str, object]]:
    """One row per store (or offer) that has any count, by id, with the stage rates."""
    rows: dict[str, dict[str, int]] = {}
    for name, n in counts.items():
        stage, kind, key = name.split("|", 2)
        if kind == by and stage in STAGES:
            rows.setdefault(key, dict.fromkeys(STAGES, 0))[stage] += n
    return [_row(by, key, rows[key]) for key in sorted(rows)]


def _row(by: By, key: str, stages: dict[str, int]) -> dict[str, object]:
    rates = {
        f"{later}_rate": _rate(stages[later], stages[earlier])
        for earlier, later in itertools.pairwise(STAGES)
    }
    return {f"{by}_id": key, **stages, "rates": rates}


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)

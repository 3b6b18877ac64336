"""Screening of many pings at once: the batch twins of the screening rules.

:func:`screen_runs` is the twin of :func:`geofence.domain.screening.screen` followed by
:func:`geofence.domain.screening.record`, ping after ping through each device's run, in a
few array steps over all runs; :func:`screen_in_turn` gives the same by those rules
themselves, the cheaper way for a few pings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from geofence.domain.model import DeviceState, Fix, Ping, ScreeningRules
from geofence.domain.screening import (
    ACCEPTED,
    EARTH_RADIUS_M,
    Screening,
    is_jump,
    record,
    screen,
)

# every verdict, by its code in the batch screening (``screen_runs``)
VERDICTS: Final = (
    ACCEPTED,
    Screening("ignored", "stale"),
    Screening("ignored", "too_old"),
    Screening("ignored", "future"),
    Screening("flagged", "inaccurate"),
    Screening("flagged", "mocked"),
    Screening("flagged", "jump"),
)
_ACCEPTED, _STALE, _TOO_OLD, _FUTURE, _INACCURATE, _MOCKED, _JUMP = range(len(VERDICTS))
_SURE: Final = 1e-9  # a speed this close (relative) to its limit is checked by is_jump

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Columns:
    """Pings as arrays, for the rules that run over a whole batch at once."""

    ts: FloatArray
    lat: FloatArray
    lng: FloatArray
    accuracy_m: FloatArray
    mocked: BoolArray

    @classmethod
    def of(cls, pings: Sequence[Ping]) -> Columns:
        fields = itertools.chain.from_iterable(
            (p.ts, p.lat, p.lng, p.accuracy_m, p.mocked) for p in pings
        )
        table = np.fromiter(fields, dtype=np.float64, count=5 * len(pings)).reshape(-1, 5)
        ts, lat, lng, accuracy_m, mocked = np.ascontiguousarray(table.T)
        return cls(ts, lat, lng, accuracy_m, mocked != 0.0)


def screen_in_turn(
    pings: Sequence[Ping],
    starts: Sequence[int],
    states: Sequence[DeviceState],
    now: float,
    rules: ScreeningRules,
) -> list[Screening]:
    """What :func:`screen_runs` gives (same arguments but the columns), by ``screen`` and
    ``record`` ping after ping: the cheaper way for a few pings, where the array steps'
    fixed cost is more than a loop over them. Twin of geofence.domain.screening.screen."""
    verdicts = []
    bounds = [*starts, len(pings)]
    for start, end, first in zip(starts, bounds[1:], states, strict=True):
        state = first
        for ping in pings[start:end]:
            verdict = screen(ping, state, now, rules)
            state = record(state, ping, verdict)
            verdicts.append(verdict)
    return verdicts


def screen_runs(
    pings: Sequence[Ping],
    columns: Columns,
    starts: Sequence[int],
    states: Sequence[DeviceState],
    now: float,
    rules: ScreeningRules,
) -> list[Screening] | None:
    """Twin of geofence.domain.screening.screen (and ``record``): the verdicts of
    ``screen`` and ``record`` taken ping after ping through each run,
    from its device's state, in a few array steps over all runs at once.

    ``pings`` (and ``columns``, the same as arrays): runs one after the other, each one
    device's pings in ts order, starting at ``starts`` with ``states``. Speeds within a
    hair of their limit are measured again by :func:`is_jump`, so the verdicts are the
    scalar rules' to the bit. None when a run is empty or out of ts order, or a ts or
    position is not finite: then only the scalar rules give the rules' answer.
    """
    c = columns
    n = len(c.ts)
    begin = np.asarray(starts, dtype=np.int64)
    lengths = np.diff(begin, append=n)
    if not n or (lengths <= 0).any() or not np.isfinite([c.ts, c.lat, c.lng]).all():
        return None
    run = np.repeat(np.arange(len(begin)), lengths)
    runs = _Runs(rows=np.arange(n), first=begin[run], run=run, states=states)
    if (np.diff(c.ts) < 0.0)[runs.rows[1:] > runs.first[1:]].any():
        return None
    ignored = _ignored_codes(c.ts, runs, now, rules)
    flagged = _flagged_codes(pings, c, runs, ignored == _ACCEPTED, rules)
    codes = np.where(ignored != _ACCEPTED, ignored, flagged)
    return [VERDICTS[code] for code in codes.tolist()]


@dataclass(frozen=True)
class _Runs:
    """Each ping's row, the first row of its run and its run's number; the runs' states."""

    rows: IntArray
    first: IntArray
    run: IntArray
    states: Sequence[DeviceState]

    def per_ping(self, values: Sequence[float]) -> FloatArray:
        """One value per run, spread to each of its pings."""
        return np.asarray(values, dtype=np.float64)[self.run]


def _ignored_codes(ts: FloatArray, runs: _Runs, now: float, rules: ScreeningRules) -> IntArray:
    """stale, too_old or future. A ts equal to the one before it in its run is stale
    exactly when that one was not ignored; both share their too_old and future verdicts,
    and ts in order mean every earlier ping kept is older."""
    last_ts = runs.per_ping([-math.inf if s.last_ts is None else s.last_ts for s in runs.states])
    too_old = ts < now - rules.too_old_s
    future = ts > now + rules.future_s
    repeated = np.zeros(len(ts), dtype=bool)
    repeated[1:] = ts[1:] == ts[:-1]
    repeated &= runs.rows > runs.first
    stale = (ts <= last_ts) | (repeated & ~too_old & ~future)
    return np.select([stale, too_old, future], [_STALE, _TOO_OLD, _FUTURE], _ACCEPTED)


def _flagged_codes(
    pings: Sequence[Ping], c: Columns, runs: _Runs, kept: BoolArray, rules: ScreeningRules
) -> IntArray:
    """inaccurate, mocked or jump, for the pings not ignored. ``last_fix`` of a ping is
    the run's latest earlier ping kept and neither inaccurate nor mocked (accepted or
    flagged jump, both of which record their fix), else the state's."""
    inaccurate = ~((c.accuracy_m > 0.0) & (c.accuracy_m <= rules.max_accuracy_m))
    fixing = kept & ~inaccurate & ~c.mocked
    before = np.maximum.accumulate(np.where(fixing, runs.rows, -1))
    before = np.concatenate(([-1], before[:-1]))
    in_run = before >= runs.first
    fixes = [s.last_fix for s in runs.states]
    has_fix = in_run | runs.per_ping([f is not None for f in fixes]).astype(bool)
    fix_lat, fix_lng, fix_ts = (
        np.where(in_run, column[np.maximum(before, 0)], runs.per_ping(of_state))
        for column, of_state in (
            (c.lat, [f.lat if f else 0.0 for f in fixes]),
            (c.lng, [f.lng if f else 0.0 for f in fixes]),
            (c.ts, [f.ts if f else 0.0 for f in fixes]),
        )
    )
    checked = fixing & has_fix
    elapsed = c.ts - fix_ts
    limit = np.where(
        elapsed >= rules.jump_gap_s, rules.jump_speed_after_gap_mps, rules.jump_speed_mps
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = _haversine_many(fix_lat, fix_lng, c.lat, c.lng) / elapsed
    jump = checked & (elapsed > 0) & (speed > limit)
    unsure = checked & ((elapsed <= 0) | (np.abs(speed - limit) <= _SURE * limit))
    for row in np.flatnonzero(unsure).tolist():
        fix = Fix(lat=float(fix_lat[row]), lng=float(fix_lng[row]), ts=float(fix_ts[row]))
        jump[row] = is_jump(pings[row], fix, rules)
    return np.select([inaccurate, c.mocked, jump], [_INACCURATE, _MOCKED, _JUMP], _ACCEPTED)


def _haversine_many(
    lat1: FloatArray, lng1: FloatArray, lat2: FloatArray, lng2: FloatArray
) -> FloatArray:
    """Twin of geofence.domain.screening.haversine_m, over arrays (to a few ulps)."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((phi2 - phi1) / 2) ** 2
        + np.cos(phi1) * np.cos(phi2) * np.sin(np.radians(lng2 - lng1) / 2) ** 2
    )
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h))))

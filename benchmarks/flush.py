"""What a flush of single pings costs in process, by size and by stage; packers; screening.

    python -m benchmarks.flush [--devices 1000]

The coalescer (``geofence/service/coalescer.py``) runs the single pings waiting together:
one read of their profiles and states, ``handle_many`` (the lookups, the rules, one write). Here
flushes of 1, 15 and 100 pings, each ping the last position of another device of the
workload, go through that same path with Redis state, in one process pinned to one core
and its heap settled as ``geofence serve`` settles it;
the CPU of each stage is timed around its call, the service's stages told by the service
itself (``PingService(stages=...)``), the store's calls by this benchmark (``entries``: the
offers of the entries, decided for the whole flush, and the funnel; ``single-device way``:
devices redone one by one after another worker wrote first). Then ``save_states`` of 100
devices with redis-py's own asyncio packer against hiredis's, which the store uses, in the same run;
and the screening of a call's pings in array steps against one after the other, by size,
which sets where the service changes from one way to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import timeit
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from benchmarks import ingest, workload
from geofence.adapters.redis import RedisStore
from geofence.adapters.redis_lane import Call, HiredisPackedConnection, Wait
from geofence.cli import settle_heap
from geofence.domain.model import DeviceState, Fix, Ping, ScreeningRules
from geofence.engine.index import DISTANCES_IN_TURN_BELOW, NEAR_IN_TURN_BELOW, FenceIndex
from geofence.engine.screening import Columns, FloatArray, screen_in_turn, screen_runs
from geofence.ports import StateWrite
from geofence.service.pings import SCREEN_AS_ARRAYS_FROM, PingService, staged

SIZES = (1, 15, 100)
PINGS_PER_SIZE = 3_000
# what the benchmark times besides the service's own stages (PingService's ``stages``):
# (object, public method) -> stage
STORE_STAGES = {
    ("store", "load_states"): "load",
    ("store", "save_states"): "save",
    ("offers", "count"): "entries",
}


async def measure(w: workload.Workload) -> dict[str, Any]:
    clock = StageClock()
    async with ingest.pipeline(w, stages=clock) as (service, refs):
        rows = _last_rows(w)
        now = float(w.pings.ts.max()) + 10.0
        settle_heap()  # as geofence serve does once the catalogue is in
        sizes = []
        for n, size in enumerate(SIZES):
            pings = _flushes(w, refs, rows, size, start=now - 3_600.0 * (len(SIZES) - n))
            sizes.append(await _timed_flushes(service, clock, pings, size, now))
        packers = await _packers(service.store, refs[:100])
        lanes = await _lanes(service.store, refs)
        rules = service.rules.screening
        lookups = _lookups(service.catalogue.index, w, rows)
        distances = _distances(service.catalogue.index, w, rows)
    screenings = _screenings(w, rows, now, rules)
    return {
        "sizes": sizes,
        "packers": packers,
        "lanes": lanes,
        "lookups": lookups,
        "distances": distances,
        "screenings": screenings,
    }


LOOKED_UP = (1, 8, 16, 32, 64)  # pings of a call, one per device as in a flush


def _lookups(index: FenceIndex, w: workload.Workload, rows: list[int]) -> list[dict[str, float]]:
    """µs per call of the lookups of ``LOOKED_UP`` pings without the exit band (what a
    flush asks), in array steps and one at a time, best of 5 rounds."""
    out = []
    for size in LOOKED_UP:
        lats, lngs = _positions(w, rows, size)
        ways = {
            "arrays": partial(index.near_arrays, lats, lngs, band=False),
            "in_turn": partial(index.near_in_turn, lats, lngs, band=False),
        }
        out.append(_both_ways(size, ways))
    return out


MEASURED = (1, 4, 8, 16, 64)  # (store, ping) pairs of a call


def _distances(index: FenceIndex, w: workload.Workload, rows: list[int]) -> list[dict[str, float]]:
    """µs per call of the distances of ``MEASURED`` (store, ping) pairs, in array steps
    and one at a time, best of 5 rounds."""
    fences = index.fences()
    out = []
    for size in MEASURED:
        lats, lngs = _positions(w, rows, size)
        ids = [fences[i * 7 % len(fences)].id for i in range(size)]
        ways = {
            "arrays": partial(index.distances_arrays, ids, lats, lngs),
            "in_turn": partial(index.distances_in_turn, ids, lats, lngs),
        }
        out.append(_both_ways(size, ways))
    return out


def _positions(w: workload.Workload, rows: list[int], size: int) -> tuple[FloatArray, FloatArray]:
    """The latitudes and longitudes of ``size`` pings, each the last of another device."""
    picked = [rows[i % len(rows)] for i in range(size)]
    return w.pings.lat[picked].astype(float), w.pings.lng[picked].astype(float)


def _both_ways(size: int, ways: Mapping[str, Callable[[], object]]) -> dict[str, float]:
    """µs per call of each way of handling a call of ``size`` pings, best of 5 rounds."""
    reps = max(1, 20_000 // size)
    row: dict[str, float] = {"size": size}
    for name, way in ways.items():
        row[name] = 1e6 * min(timeit.repeat(way, number=reps, repeat=5)) / reps
    return row


SCREENED = (15, 64, 128, 256, 1_000)  # pings of a call, one per device as in a flush


def _screenings(
    w: workload.Workload, rows: list[int], now: float, rules: ScreeningRules
) -> list[dict[str, float]]:
    """µs per call of screening ``SCREENED`` pings, each of another device from a state
    with its ping and fix of a minute before, in array steps and one after the other (the
    service's way below ``SCREEN_AS_ARRAYS_FROM`` pings), best of 5 rounds."""
    p = w.pings
    out = []
    for size in SCREENED:
        pings = [_ping_at(p, rows[i % len(rows)], now) for i in range(size)]
        # a minute ago, where it is now: the jump check runs, as for a stored device
        states = [
            DeviceState(last_ts=now - 60.0, last_fix=Fix(lat=x.lat, lng=x.lng, ts=now - 60.0))
            for x in pings
        ]
        starts = list(range(size))
        # the columns are not counted: a batch makes them for its lookups anyway
        ways: dict[str, Callable[[], object]] = {
            "arrays": partial(screen_runs, pings, Columns.of(pings), starts, states, now, rules),
            "in_turn": partial(screen_in_turn, pings, starts, states, now, rules),
        }
        out.append(_both_ways(size, ways))
    return out


def _last_rows(w: workload.Workload) -> list[int]:
    last = {device: row for row, device in enumerate(w.pings.device.tolist())}
    return list(last.values())


def _flushes(
    w: workload.Workload, refs: list[str], rows: list[int], size: int, start: float
) -> Iterator[list[tuple[str, list[Ping]]]]:
    """Flushes of ``size`` single pings, each of another device, ts moving on."""
    p = w.pings
    for n in range(max(1, PINGS_PER_SIZE // size)):
        flush = []
        for j in range(size):
            row = rows[(n * size + j) % len(rows)]
            flush.append((refs[int(p.device[row])], [_ping_at(p, row, start + n + j * 1e-3)]))
        yield flush


def _ping_at(p: workload.Pings, row: int, ts: float) -> Ping:
    """The workload's ping of ``row``, sent again at ``ts``."""
    return Ping(
        lat=float(p.lat[row]), lng=float(p.lng[row]), accuracy_m=float(p.accuracy_m[row]), ts=ts
    )


class StageClock:
    """The CPU seconds of each stage since the last :meth:`reset`, as the service and the
    store's and offers' timed methods tell them."""

    def __init__(self) -> None:
        self.spent: defaultdict[str, float] = defaultdict(float)

    def __call__(self, stage: str, seconds: float) -> None:
        self.spent[stage] += seconds

    def reset(self) -> None:
        self.spent.clear()


async def _timed_flushes(
    service: PingService,
    clock: StageClock,
    flushes: Iterator[list[tuple[str, list[Ping]]]],
    size: int,
    now: float,
) -> dict[str, Any]:
    pings = 0
    with _store_timers(service, clock):
        clock.reset()
        cpu = time.process_time()
        for flush in flushes:
            started = time.process_time()
            refs = [ref for ref, _ in flush]
            read = await service.store.load_devices(refs)
            loaded = {ref: stored for ref, (_, stored) in zip(refs, read, strict=True)}
            clock("read", time.process_time() - started)
            await service.handle_many(flush, now=now, loaded=loaded)
            pings += len(flush)
        cpu = time.process_time() - cpu
    return {
        "size": size,
        "us_per_ping": 1e6 * cpu / pings,
        "stages_us_per_ping": {stage: 1e6 * s / pings for stage, s in _by_share(clock.spent)},
    }


def _by_share(spent: Mapping[str, float]) -> list[tuple[str, float]]:
    """The stages, the costliest first."""
    return sorted(spent.items(), key=lambda item: -item[1])


@contextmanager
def _store_timers(service: PingService, clock: StageClock) -> Iterator[None]:
    """Time the store's and the offers' public calls the service makes (CPU of this
    process), by wrapping them on the instances this benchmark built."""
    owners = {"store": service.store, "offers": service.offers}
    for (owner, name), stage in STORE_STAGES.items():
        setattr(owners[owner], name, staged(getattr(owners[owner], name), stage, clock))
    try:
        yield
    finally:
        for owner, name in STORE_STAGES:
            delattr(owners[owner], name)


async def _packers(store: Any, refs: list[str]) -> dict[str, float]:
    """µs of CPU per device of a load and a save of ``refs``, with each packer."""
    if not isinstance(store, RedisStore):
        raise TypeError("the packers are measured on a RedisStore")
    out = {}
    for name, kind in (("redis-py", aioredis.Connection), ("hiredis", HiredisPackedConnection)):
        client = aioredis.Redis.from_url(ingest.REDIS_URL, connection_class=kind)
        other = RedisStore(client, prefix=store.keys.prefix)
        try:
            out[name] = await _per_device(refs, partial(_save_all, other, refs))
        finally:
            await other.close()
    return out


LANE_SIZES = (1, 8, 15)  # devices per call: flushes of single pings
LANE_ROUNDS = 5


async def measure_lanes(w: workload.Workload) -> list[dict[str, float]]:
    """The lane table alone."""
    async with ingest.pipeline(w) as (service, refs):
        settle_heap()
        return await _lanes(service.store, refs)


async def _lanes(store: Any, refs: list[str]) -> list[dict[str, float]]:
    """µs of CPU per call of a read (``load_devices``) and a write (``save_states``) of
    ``LANE_SIZES`` devices, through its client, on the store's lane and on a lane of
    redis-py's public pipeline (``PipelineLane``), the ways in turns (``LANE_ROUNDS``),
    best round of each."""
    if not isinstance(store, RedisStore):
        raise TypeError("the lanes are measured on a RedisStore")
    prefix = store.keys.prefix
    ways = {
        "client": RedisStore(aioredis.Redis.from_url(ingest.REDIS_URL), prefix=prefix, lanes=0),
        "lane": RedisStore(aioredis.Redis.from_url(ingest.REDIS_URL), prefix=prefix),
        "pipeline": RedisStore(
            aioredis.Redis.from_url(ingest.REDIS_URL), prefix=prefix, lane=PipelineLane
        ),
    }
    out = []
    try:
        for size in LANE_SIZES:
            row: dict[str, float] = {"size": size}
            for _ in range(LANE_ROUNDS):
                for name, way in ways.items():
                    per_call = size * await _per_device(
                        refs[:size], partial(_save_all, way, refs[:size])
                    )
                    row[name] = min(row.get(name, math.inf), per_call / 2)
            out.append(row)
    finally:
        for way in ways.values():
            await way.close()
    return out


class PipelineLane:
    """The store's lane done with redis-py's public API only, to compare: a pipeline (no
    transaction) of the same EVALSHA calls on a client of its own with one connection,
    with the lane's settings (no socket timeout of its own, one ``asyncio.timeout`` over
    the call, no health check)."""

    def __init__(self, client: aioredis.Redis) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self.timeout_s: float | None = kwargs.get("socket_timeout")
        kwargs.update(socket_timeout=None, health_check_interval=0)
        own = aioredis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **kwargs
        )
        self._client = aioredis.Redis.from_pool(own)
        self.busy = False

    async def run_all(self, calls: Sequence[Call], *, wait: Wait | None = None) -> list[Any]:
        self.busy = True
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._pipeline(calls, wait)
            if any(isinstance(r, rexc.NoScriptError) for r in replies):
                for script, _, _ in calls:
                    await self._client.script_load(script.script)
                replies = await self._pipeline(calls, wait)
            return replies
        finally:
            self.busy = False

    async def close(self) -> None:
        await self._client.aclose()

    async def _pipeline(self, calls: Sequence[Call], wait: Wait | None) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if wait is not None:
                pipe.execute_command("WAIT", *wait)
            return list(await pipe.execute(raise_on_error=False))


async def _save_all(store: RedisStore, refs: list[str]) -> None:
    loaded = await store.load_states(refs)
    writes = [
        StateWrite(ref=r, state=s.state, version=s.version)
        for r, s in zip(refs, loaded, strict=True)
    ]
    await store.save_states(writes)


async def _per_device(refs: list[str], run: Callable[[], Awaitable[None]]) -> float:
    for _ in range(10):
        await run()
    rounds = 200
    cpu = time.process_time()
    for _ in range(rounds):
        await run()
    return 1e6 * (time.process_time() - cpu) / (rounds * len(refs))


def table(r: dict[str, Any]) -> str:
    stages = list(dict.fromkeys(s for row in r["sizes"] for s in row["stages_us_per_ping"]))
    lines = [
        "| pings per flush | µs per ping | " + " | ".join(stages) + " |",
        "|---:|---:|" + "---:|" * len(stages),
    ]
    for row in r["sizes"]:
        cells = [f"{row['stages_us_per_ping'].get(s, 0.0):.0f}" for s in stages]
        lines.append(f"| {row['size']} | {row['us_per_ping']:.0f} | " + " | ".join(cells) + " |")
    p = r["packers"]
    lines += [
        "",
        (
            f"Load and save of 100 devices, µs of CPU per device: redis-py's asyncio packer "
            f"{p['redis-py']:.1f}, hiredis's {p['hiredis']:.1f} "
            f"({p['redis-py'] / p['hiredis']:.2f}× less with hiredis)."
        ),
        "",
        (
            "A script call of the store (a read or a write of a flush's devices, half of "
            "`load_states` + `save_states`), µs of CPU per call, through redis-py's client, "
            "on the store's lane (`geofence/adapters/redis_lane.py`), and on a pipeline of "
            "redis-py's public API with the lane's settings (`PipelineLane`):"
        ),
        "",
        "| devices | client | lane | pipeline | client / lane | pipeline / lane |",
        "|---:|---:|---:|---:|---:|---:|",
        *(_lane_row(x) for x in r["lanes"]),
        "",
        (
            f"The lookups of a call's pings without the exit band, one per device, µs per call "
            f"(the service looks up fewer than {NEAR_IN_TURN_BELOW} one at a time):"
        ),
        "",
        *_two_ways(
            "pings",
            "in array steps (`near_arrays`)",
            "one at a time (`near_in_turn`)",
            r["lookups"],
        ),
        "",
        (
            f"The distances of (store, ping) pairs, µs per call (the service computes fewer "
            f"than {DISTANCES_IN_TURN_BELOW} one at a time):"
        ),
        "",
        *_two_ways(
            "pairs",
            "in array steps (`distances_arrays`)",
            "one at a time (`distances_in_turn`)",
            r["distances"],
        ),
        "",
        (
            f"Screening a call's pings, one per device, µs per call (the service screens fewer "
            f"than {SCREEN_AS_ARRAYS_FROM} one after the other):"
        ),
        "",
        *_two_ways(
            "pings",
            "in array steps (`screen_runs`)",
            "one after the other (`screen_in_turn`)",
            r["screenings"],
        ),
    ]
    return "\n".join(lines)


def _two_ways(size: str, arrays: str, in_turn: str, rows: list[dict[str, float]]) -> list[str]:
    """The lines of a table of ``_both_ways`` rows, by call size."""
    lines = [f"| {size} | {arrays} | {in_turn} |", "|---:|---:|---:|"]
    return lines + [
        f"| {x['size']:,.0f} | {x['arrays']:,.0f} | {x['in_turn']:,.0f} |" for x in rows
    ]


def _lane_row(x: dict[str, float]) -> str:
    cells = " | ".join(f"{x[way]:.0f}" for way in ("client", "lane", "pipeline"))
    ratios = " | ".join(f"{x[way] / x['lane']:.2f}×" for way in ("client", "pipeline"))
    return f"| {x['size']} | {cells} | {ratios} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--lanes", action="store_true", help="the lane table only")
    args = parser.parse_args()
    print(ingest.pin_to_one_core())
    w = workload.make(fences=10_000, devices=args.devices, duration_s=600.0)
    if args.lanes:
        print("\n".join(_lane_row(x) for x in asyncio.run(measure_lanes(w))))
        return
    print(table(asyncio.run(measure(w))))


if __name__ == "__main__":
    main()

"""Batch ingest through the ping pipeline with Redis state, in one process.

    python -m benchmarks.ingest [--devices 2000] [--duration 1800] [--profile]

Drives the service with the workload's batches as ``POST /v1/pings/batch`` does once the
body is parsed: the profiles of the batch's devices in one round trip, then screening,
the fence index, the visit rules, offers on the entries and the outbox, with every state
in Redis (GEOFENCE_BENCH_REDIS_URL, default redis://127.0.0.1:6379/14, under a key prefix
of its own that is removed afterwards). Two ways side by side on the same pings, each
from empty state:

- one device at a time: ``PingService.handle`` per device, one round trip to load and one
  to write per device (the single-device path);
- whole batch: ``PingService.handle_many``.

The process is pinned to one core where it can be (Redis runs in its own process), and
pings/s are pings per CPU second of this process. The heap is settled (``settle_heap``)
once the catalogue is in, as ``geofence serve`` does, so collections do not walk it.
``--profile`` samples the whole-batch run with pyinstrument and splits the time by stage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis

from benchmarks import workload
from geofence import bootstrap
from geofence.adapters.redis import RedisStore
from geofence.cli import settle_heap
from geofence.config import Settings
from geofence.domain.devices import DeviceProfile
from geofence.domain.model import Ping
from geofence.domain.offers import Offer
from geofence.metrics import Metrics
from geofence.service.pings import PingService, Stages

REDIS_URL = os.environ.get("GEOFENCE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
Groups = list[tuple[str, list[Ping]]]

# where the time goes: the first rule matching a frame's file, from the leaf up
STAGES = (
    ("screening", ("geofence/domain/screening.py", "geofence/engine/screening.py")),
    (
        "visit rules",
        ("geofence/domain/visits.py", "geofence/engine/visits.py", "geofence/engine/device.py"),
    ),
    (
        "fence index",
        ("geofence/engine/index.py", "geofence/engine/ufuncs.py", "/h3/", "/shapely/", "/numpy/"),
    ),
    ("offers", ("geofence/domain/offers.py", "geofence/service/offers.py")),
    ("redis client", ("/redis/", "/hiredis/", "asyncio/selector_events.py")),
    ("metrics and logs", ("/prometheus_client/", "/logging/", "geofence/logs.py")),
    ("pipeline glue", ("geofence/service/", "geofence/adapters/", "/msgspec/")),
    ("event loop", ("/asyncio/",)),
)


@dataclass(frozen=True)
class Run:
    name: str
    pings: int
    cpu_s: float
    wall_s: float
    events: int
    notifications: int

    @property
    def per_cpu_s(self) -> float:
        return self.pings / self.cpu_s


def pin_to_one_core() -> str:
    """Pin this process to its first allowed core; say which, or why not."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return "not pinned"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def settings() -> Settings:
    return Settings(id_secret="bench", stores="", quiet_hours="off", redis_url=REDIS_URL)


@contextlib.asynccontextmanager
async def pipeline(
    w: workload.Workload, *, stages: Stages | None = None
) -> AsyncIterator[tuple[PingService, list[str]]]:
    """A service on Redis with the workload's stores, devices and one offer; removed after.
    ``stages``: told the CPU time of each of the service's stages."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = settings()
    store = RedisStore.from_url(REDIS_URL, prefix=prefix)
    try:
        await store.replace_catalogue(w.fences)
        metrics = Metrics()
        catalogue = bootstrap.catalogue_service(cfg, store, metrics)
        await catalogue.refresh()
        devices = bootstrap.device_service(cfg, store)
        refs = [devices.ref_of(d) for d in w.device_ids]
        for ref in refs:
            consent = {"location": True, "offers": True}
            await store.create_device(
                DeviceProfile(ref=ref, token_hash="-", consent=consent, push_token="t")
            )
        offers = bootstrap.offer_service(cfg, store)
        offer = Offer(
            id="welcome",
            title="Welcome",
            body="At {store_name}",
            store_tags=("shop",),
            starts_at=0,
            ends_at=4e9,
        )
        await offers.put(offer)
        yield (
            bootstrap.ping_service(cfg, store, catalogue, metrics, offers=offers, stages=stages),
            refs,
        )
    finally:
        await drop_prefix(prefix)
        await store.close()


async def drop_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Every key under ``prefix`` removed: what a benchmark wrote to the Redis at ``url``."""
    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def batches(w: workload.Workload, refs: list[str]) -> list[tuple[float, Groups]]:
    """Each batch as (its upload time, the groups of pings by device)."""
    p = w.pings
    out = []
    for batch in p.batches():
        groups = [(refs[int(p.device[start])], _pings(p, start, end)) for start, end in batch]
        out.append((float(max(p.ts[end - 1] for _, end in batch)) + 1.0, groups))
    return out


def _pings(p: workload.Pings, start: int, end: int) -> list[Ping]:
    return [
        Ping(lat=lat, lng=lng, accuracy_m=acc, ts=ts)
        for lat, lng, acc, ts in zip(
            p.lat[start:end].tolist(),
            p.lng[start:end].tolist(),
            p.accuracy_m[start:end].tolist(),
            p.ts[start:end].tolist(),
            strict=True,
        )
    ]


async def one_at_a_time(service: PingService, now: float, groups: Groups) -> list[Any]:
    await service.offers.store.get_devices([ref for ref, _ in groups])
    return [await service.handle(ref, pings, now=now) for ref, pings in groups]


async def whole_batch(service: PingService, now: float, groups: Groups) -> list[Any]:
    await service.offers.store.get_devices([ref for ref, _ in groups])
    return await service.handle_many(groups, now=now)


Way = Callable[[PingService, float, Groups], Awaitable[list[Any]]]


async def timed(name: str, way: Way, w: workload.Workload, profiler: Any = None) -> Run:
    async with pipeline(w) as (service, refs):
        work = batches(w, refs)
        settle_heap()
        if profiler is not None:
            profiler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        answers = [await way(service, now, groups) for now, groups in work]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler is not None:
            profiler.stop()
    results = [r for batch in answers for device in batch for r in device]
    return Run(
        name,
        pings=len(results),
        cpu_s=cpu,
        wall_s=wall,
        events=sum(len(r.events) for r in results),
        notifications=sum(len(r.notifications) for r in results),
    )


def by_stage(profiler: Any) -> dict[str, float]:
    """Seconds of samples per stage: each frame's own time goes to the first stage that
    matches it or, failing that, its nearest caller that matches."""
    totals: dict[str, float] = {}

    def walk(frame: Any, stage: str) -> None:
        mine = _stage_of(frame.file_path or "") or stage
        own = frame.time - sum(child.time for child in frame.children)
        totals[mine] = totals.get(mine, 0.0) + own
        for child in frame.children:
            walk(child, mine)

    root = profiler.last_session.root_frame()
    if root is not None:
        walk(root, "other")
    return totals


def _stage_of(path: str) -> str | None:
    for stage, marks in STAGES:
        if any(mark in path for mark in marks):
            return stage
    return None


async def measure(w: workload.Workload, *, profile: bool = False) -> dict[str, Any]:
    """Both ways on the same workload; with ``profile``, each once more under the sampler
    (which slows it down) for the split of its time by stage."""
    before = await timed("one device at a time (handle)", one_at_a_time, w)
    after = await timed("whole batch (handle_many)", whole_batch, w)
    if (before.events, before.notifications) != (after.events, after.notifications):
        raise AssertionError(f"the two ways disagree: {before} vs {after}")
    out: dict[str, Any] = {"runs": [before, after], "ratio": after.per_cpu_s / before.per_cpu_s}
    if profile:
        out["stages"] = {
            "before": await sampled(one_at_a_time, w),
            "after": await sampled(whole_batch, w),
        }
    return out


async def sampled(way: Way, w: workload.Workload) -> dict[str, float]:
    from pyinstrument import Profiler  # noqa: PLC0415 - the bench extra, for --profile only

    profiler = Profiler(interval=0.001, async_mode="disabled")
    await timed("sampled", way, w, profiler)
    return by_stage(profiler)


def table(result: dict[str, Any]) -> str:
    rows = [
        (
            "| pipeline | pings | pings per CPU s of this process | wall s | entries+exits "
            "| notifications |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows.extend(
        f"| {r.name} | {r.pings:,} | {r.per_cpu_s:,.0f} | {r.wall_s:.1f} "
        f"| {r.events:,} | {r.notifications:,} |"
        for r in result["runs"]
    )
    return "\n".join(rows)


def stage_table(stages: dict[str, dict[str, float]]) -> str:
    """Each stage's share of the CPU time, before and after, by its share after."""
    shares = {
        way: {stage: t / (sum(times.values()) or 1.0) for stage, t in times.items()}
        for way, times in stages.items()
    }
    rows = ["| stage | before (handle) | after (handle_many) |", "|---|---:|---:|"]
    for stage in sorted(shares["after"], key=lambda s: -shares["after"][s]):
        before = shares["before"].get(stage, 0.0)
        rows.append(f"| {stage} | {before:.0%} | {shares['after'][stage]:.0%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of walking")
    parser.add_argument("--fences", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(pin_to_one_core())
    w = workload.make(fences=args.fences, devices=args.devices, duration_s=args.duration)
    result = asyncio.run(measure(w, profile=args.profile))
    print(table(result))
    print(f"whole batch / one device at a time: {result['ratio']:.2f}×")
    if "stages" in result:
        print(stage_table(result["stages"]))
    print(msgspec.json.encode({"ratio": result["ratio"]}).decode())


if __name__ == "__main__":
    main()

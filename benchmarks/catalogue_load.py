"""A large catalogue through the state store, as ``geofence serve`` meets it at start.

    python -m benchmarks.catalogue_load [--fences 10000,50000,100000] [--redis-url URL]

``benchmarks.million`` builds its million fences straight into the index's table; this
measures the way a real catalogue comes: the fences (the Helsinki footprints copied over
cities, ``tools.replicas``, © OpenStreetMap contributors) stored with
``replace_catalogue``, then, in a fresh process, loaded as ``geofence serve`` does before
it forks its workers (``CatalogueService.start``: the store's ``load_catalogue``, then
the index), with the service's default settings (its Redis timeout included). Beside
it, the baseline: a fresh process that builds the index from the same fences' table, as
``benchmarks.million`` does. Reported for each size: seconds and peak RSS (VmHWM) of
both, and their ratios. The keys are written to GEOFENCE_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/14, as ``benchmarks.ingest``) under a prefix of their own, and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.ingest import REDIS_URL, drop_prefix
from geofence.adapters.redis import RedisStore
from geofence.bootstrap import catalogue_service, make_store
from geofence.config import Settings
from geofence.engine.index import FenceIndex
from geofence.metrics import Metrics
from tools.processes import ROOT
from tools.replicas import replicas

SEED = 1


def peak_rss_mb() -> float:
    """VmHWM of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def store_fences(url: str, prefix: str, n: int) -> float:
    """The ``n`` replicas written as the catalogue; the seconds it took."""
    table = replicas(n, SEED)
    fences = [table.fence(i) for i in range(n)]
    store = RedisStore.from_url(url, prefix=prefix, timeout_s=600.0)
    try:
        started = time.perf_counter()
        await store.replace_catalogue(fences)
        return time.perf_counter() - started
    finally:
        await store.close()


def load_as_serve(url: str, prefix: str) -> dict[str, Any]:
    """In this (fresh) process: the catalogue loaded as ``geofence serve`` does."""
    settings = Settings(redis_url=url, redis_prefix=prefix, stores="")

    async def load() -> int:
        store = make_store(settings)
        catalogue = catalogue_service(settings, store, Metrics())
        try:
            await catalogue.start()
        finally:
            await catalogue.uploads.close()
            await store.close()
        return len(catalogue.index)

    started = time.perf_counter()
    try:
        fences = asyncio.run(load())
    except Exception as e:  # noqa: BLE001 - what the service would meet is the result
        return {"error": f"{type(e).__name__}: {e}", "peak_mb": peak_rss_mb()}
    return {"s": time.perf_counter() - started, "peak_mb": peak_rss_mb(), "fences": fences}


def build_from_table(n: int) -> dict[str, Any]:
    """In this (fresh) process: the same fences built straight from their table."""
    table = replicas(n, SEED)
    started = time.perf_counter()
    index = FenceIndex.build_table(table)
    return {"s": time.perf_counter() - started, "peak_mb": peak_rss_mb(), "fences": len(index)}


def child(*args: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter (its peak RSS its own)."""
    argv = [sys.executable, "-m", "benchmarks.catalogue_load", "--child", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(url: str, n: int) -> dict[str, Any]:
    prefix = f"bench-catalogue-{uuid.uuid4().hex[:8]}"
    try:
        written_s = asyncio.run(store_fences(url, prefix, n))
        served = child("serve", url, prefix)
    finally:
        asyncio.run(drop_prefix(prefix, url))
    table = child("table", str(n))
    if "error" not in served and served["fences"] != n:
        raise AssertionError(f"{served['fences']} fences loaded of {n}")
    return {"fences": n, "write_s": written_s, "serve": served, "table": table}


def row(r: dict[str, Any]) -> str:
    served, table = r["serve"], r["table"]
    if "error" in served:
        start = f"failed: {served['error']} | peak {served['peak_mb']:,.0f} MB"
        return f"| {r['fences']:,} | {r['write_s']:.1f} | {start} | {table['s']:.1f} s |"
    return (
        f"| {r['fences']:,} | {r['write_s']:.1f} | {served['s']:.1f} s, {served['peak_mb']:,.0f} MB"
        f" | {table['s']:.1f} s, {table['peak_mb']:,.0f} MB"
        f" | {served['s'] / table['s']:.2f}x, {served['peak_mb'] / table['peak_mb']:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fences", default="10000,50000,100000")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = load_as_serve(*rest) if kind == "serve" else build_from_table(int(rest[0]))
        print(json.dumps(result))
        return
    print("| fences | stored in (s) | loaded as serve does | built from the table | ratio |")
    print("|---|---|---|---|---|")
    for n in (int(x) for x in args.fences.split(",")):
        print(row(measure(args.redis_url, n)), flush=True)


if __name__ == "__main__":
    main()

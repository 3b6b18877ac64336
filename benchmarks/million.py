"""A million fences: FenceIndex built and asked against a shapely STRtree on the same fences.

    python -m benchmarks.million [--fences 1000000] [--points 1000000] [--quick] [--no-write]

The 162 Helsinki shop footprints (© OpenStreetMap contributors, ODbL) are copied into
blocks over a grid of cities around the world, each copy turned and scaled a little about
its own centre, so that no two fences are the same shape in the same place. The fences are
made straight into the index's compact table (1M ``Fence`` structs with GeoJSON lists would
take several gigabytes before the index is built). Measured: the build, the process's RSS
(``/proc/self/status``: GEOS's heap is not seen by tracemalloc), lookups per second of
``FenceIndex.inside_many`` and of ``STRtree.query(points, predicate="intersects")`` on the
same points (the tree and the points made outside the timing), interleaved rounds, the
answers checked fence for fence; then the index shared by two forked workers, each asked
the same points, with RSS, PSS and USS from ``/proc/<pid>/smaps_rollup``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from benchmarks.report import write_section
from geofence.cli import release_free_heap, settle_heap
from geofence.engine.index import FenceIndex
from geofence.service.catalogue import collector_paused
from tools.replicas import points, replicas

INSIDE_SHARE = 0.2
ROUNDS = 5


def memory() -> dict[str, int]:
    """VmRSS (and its file-backed share, RssFile) and VmHWM of this process, in kB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssFile"):
            out[name] = int(value.split()[0])
    return out


def rollup(pid: int) -> dict[str, int]:
    """Rss, Pss and Private (USS) of a process from smaps_rollup, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": private}


def answers_of_index(index: FenceIndex, lats: Any, lngs: Any) -> tuple[Any, Any]:
    """(point, fence number) of every answer of ``inside_many`` (the replicas' ids are
    ``f<number>``), in the order of ``answers_of_tree``."""
    found = index.inside_many(lats, lngs)
    rows = np.repeat(np.arange(len(found)), [len(f) for f in found])
    fences = np.fromiter((int(f[1:]) for row in found for f in row), dtype=np.int64)
    order = np.lexsort((fences, rows))
    pairs = index.inside_pairs(lats, lngs)
    again = np.lexsort((pairs[1], pairs[0]))
    if not (
        np.array_equal(pairs[0][again], rows) and np.array_equal(pairs[1][again], fences[order])
    ):
        raise AssertionError("inside_pairs and inside_many differ")
    return rows[order], fences[order]


def answers_of_tree(tree: Any, query: Any) -> tuple[Any, Any]:
    hit_point, hit_fence = tree.query(query, predicate="intersects")
    order = np.lexsort((hit_fence, hit_point))
    return hit_point[order], hit_fence[order]


def interleaved(runs: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds of each run over ``ROUNDS`` rounds, in turn within each round."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, fn in runs.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def workers(index: FenceIndex, lats: Any, lngs: Any, count: int) -> list[dict[str, Any]]:
    """``count`` forked workers share the index built before the fork (the collector's
    view of it frozen already, as ``geofence serve --workers`` does); each answers the
    points and reports its memory, then hands its free C heap back and reports again:
    what stays private then is what the index's pages cost it, not the lookups' scratch."""
    children = []
    for _ in range(count):
        answered, asked = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            index.inside_many(lats, lngs)
            index.near_many(lats[:100_000], lngs[:100_000])
            os.write(answered[1], b"1")
            os.read(asked[0], 1)
            release_free_heap()
            os.write(answered[1], b"2")
            time.sleep(3600)
            os._exit(0)
        children.append((pid, answered[0], asked[1]))
    stats: list[dict[str, Any]] = [{} for _ in children]
    for step in ("answered", "trimmed"):
        for (pid, read, write), stat in zip(children, stats, strict=True):
            os.read(read, 1)
            stat[step] = rollup(pid)
            os.write(write, b"t")
    for pid, read, write in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
        os.close(write)
    return stats


def array_megabytes(index: FenceIndex) -> float:
    """The numpy arrays the index holds (its cells, grids and per-fence numbers), not its
    fences' table: what is left of its RSS is GEOS's polygons and Python objects."""
    seen: dict[int, int] = {}
    parts = [index, *(getattr(index, name) for name in ("_table", "_vectors", "_coarse", "_boxes"))]
    for part in parts:
        for name in getattr(type(part), "__slots__", ()) or vars(part):
            value = getattr(part, name, None)
            if isinstance(value, np.ndarray) and value.dtype != object:
                seen[id(value)] = value.nbytes
    return sum(seen.values()) / 2**20


def run(n_fences: int, n_points: int, seed: int = 1) -> dict[str, Any]:
    table = replicas(n_fences, seed)
    lats, lngs = points(table, n_points, seed + 1, INSIDE_SHARE)
    settle_heap()
    before = memory()
    start = time.perf_counter()
    with collector_paused():  # as the catalogue builds its index
        index = FenceIndex.build_table(table)
    build_s = time.perf_counter() - start
    unsettled = memory()
    settle_heap()  # as the service does with each catalogue it installs
    after = memory()
    shared = workers(index, lats, lngs, 2)
    # the baseline: the same fences as lng/lat shapely polygons in an STRtree
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, table.coords, (table.ring_offsets, table.part_offsets)
    )
    tree = shapely.STRtree(polygons)
    query = shapely.points(lngs, lats)
    seconds = interleaved(
        {
            "pairs": lambda: index.inside_pairs(lats, lngs),
            "strtree": lambda: tree.query(query, predicate="intersects"),
            "lists": lambda: index.inside_many(lats, lngs),
        }
    )
    mine, theirs = answers_of_index(index, lats, lngs), answers_of_tree(tree, query)
    same = all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
    ratios = [t / i for i, t in zip(seconds["pairs"], seconds["strtree"], strict=True)]
    list_ratios = [t / i for i, t in zip(seconds["lists"], seconds["strtree"], strict=True)]
    return {
        "fences": n_fences,
        "points": n_points,
        "vertices": len(table.coords),
        "cells": index.cells,
        "answers": len(mine[0]),
        "inside": len(np.unique(mine[0])),
        "identical": same,
        "build_s": build_s,
        "rss_before_mb": before["VmRSS"] / 1024,
        "rss_mb": after["VmRSS"] / 1024,
        "rss_file_mb": after["RssFile"] / 1024,
        "spilled": table.spilled,
        "arrays_mb": array_megabytes(index),
        "table_mb": (table.coords.nbytes + table.ring_offsets.nbytes) / 2**20,
        "unsettled_mb": unsettled["VmRSS"] / 1024,
        "peak_mb": after["VmHWM"] / 1024,
        "pairs_pps": [n_points / s for s in seconds["pairs"]],
        "lists_pps": [n_points / s for s in seconds["lists"]],
        "list_ratios": list_ratios,
        "strtree_pps": [n_points / s for s in seconds["strtree"]],
        "ratios": ratios,
        "workers": shared,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f} to {max(values):,.0f})"


def targets(r: dict[str, Any]) -> str:
    met = {True: "yes", False: "**no**"}
    ratio = statistics.median(r["ratios"])
    ratios = f"{ratio:.2f}× ({min(r['ratios']):.2f} to {max(r['ratios']):.2f})"
    rows = [
        (
            "build (`FenceIndex.build_table`, the collector paused)",
            f"{r['build_s']:.1f} s",
            "≤ 60 s",
            r["build_s"] <= 60,
        ),
        ("RSS after the build", f"{r['rss_mb']:,.0f} MB", "≤ 1,200 MB", r["rss_mb"] <= 1200),
        ("peak RSS of the process so far", f"{r['peak_mb']:,.0f} MB", "—", None),
        ("lookups/s, `FenceIndex.inside_pairs` (arrays)", spread(r["pairs_pps"]), "—", None),
        ("lookups/s, `STRtree.query(intersects)` (arrays)", spread(r["strtree_pps"]), "—", None),
        ("inside_pairs / STRtree, median of the rounds' ratios", ratios, "≥ 2×", ratio >= 2),
        ("lookups/s, `FenceIndex.inside_many` (lists of ids)", spread(r["lists_pps"]), "—", None),
        ("inside_many / STRtree", f"{statistics.median(r['list_ratios']):.2f}×", "—", None),
    ]
    lines = ["| | measured | target | met |", "|---|---:|---:|:---:|"]
    lines += [f"| {a} | {b} | {c} | {met.get(d, '—')} |" for a, b, c, d in rows]
    return "\n".join(lines)


def section(r: dict[str, Any], command: str) -> str:
    verdict = "identical" if r["identical"] else "DIFFERENT"
    rows = "\n".join(
        f"| worker {i + 1}, {step} | {m['rss'] / 1024:,.0f} MB | {m['pss'] / 1024:,.0f} MB "
        f"| {m['uss'] / 1024:,.0f} MB |"
        for step in ("answered", "trimmed")
        for i, w in enumerate(r["workers"])
        for m in [w[step]]
    )
    return f"""## A million fences

`{command}` on {platform.python_implementation()} {platform.python_version()},
{platform.machine()}, 2 cores shared with other work. {r["fences"]:,} fences
({r["vertices"]:,} vertices): the 162 Helsinki shop footprints (© OpenStreetMap
contributors, ODbL) copied in blocks over a grid of cities, each copy turned (±0.25 rad) and
scaled (0.85 to 1.15) about its own centre. {r["points"]:,} points over the cities' blocks,
{INSIDE_SHARE:.0%} of them drawn in random fences' bounding boxes; {r["inside"]:,} points
are inside a fence ({r["answers"]:,} answers). H3 resolution 11, exit margin 30 m,
{r["cells"]:,} indexed cells. Answers of the index vs STRtree, point by point: {verdict}.

{targets(r)}

RSS: of the whole benchmark process, `/proc/self/status` (GEOS's heap is not seen by
tracemalloc). Before the build, with the fences' table made (every vertex as one lng/lat
array, the ids) and the points: {r["rss_before_mb"]:,.0f} MB; right after the build
{r["unsettled_mb"]:,.0f} MB, then {r["rss_mb"]:,.0f} MB once the service's `settle_heap`
has frozen the collector's view and handed the C heap's free pages back (`malloc_trim`).
Of that, {r["rss_file_mb"]:,.0f} MB is file-backed (the
interpreter's and libraries' code). Once built, the index moves its table's vertices
({r["table_mb"]:,.0f} MB, read again only to give a `Fence` back) to a file mapped
read-only and unlinked at once (`FenceTable.spill`; spilled: {r["spilled"]}): they are
no longer in the process's memory, and the pages `fence(id)` reads are the kernel's to
drop again. What stays, {r["rss_mb"]:,.0f} MB, is {r["arrays_mb"]:,.0f} MB of the
index's numpy arrays (cells, grids, per-fence numbers), GEOS's polygons, one per fence in
its own plane (about 750 bytes for 19 vertices: GEOS keeps each ring, polygon and
envelope as objects of their own), the ids (`FenceIds`: their UTF-8 bytes end to end with
offsets, CRC-32s and ranks, about 30 MB where strings in a list, an array and a dict took
about 130), the points asked (16 MB) and the interpreter with its libraries.

Lookups: {ROUNDS} interleaved rounds, median (least to most); the STRtree and its points
made outside the timing. `inside_pairs` answers as `STRtree.query` does, (point, fence)
arrays, each point's fences in id order; `inside_many` turns them into a list of ids per
point. Both run one exact GEOS test per fence whose box holds the point, and at a million
fences these tests are most of the time of each: the shop footprints are mostly smaller
than an H3 cell of resolution 11, so the cover has few interior cells to answer without a
test. What the index saves is the tree's descent, found instead in a grid of the fences'
boxes (squares of 0.001°, a few per shop) by a few numpy steps.

Two workers forked after the build, the collector's view of the index frozen
(`gc.freeze()`), as `geofence serve --workers 2` does; each answered the {r["points"]:,}
points and `near_many` of 100,000 of them, then reported `/proc/<pid>/smaps_rollup`
(answered), then handed its free C heap back (`malloc_trim`) and reported again
(trimmed): RSS counts the shared pages in each worker, PSS divides them between the
workers, USS is the worker's own.

| worker | RSS | PSS | USS (private) |
|---|---:|---:|---:|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fences", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 fences, 100,000 points")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    fences, n_points = (50_000, 100_000) if args.quick else (args.fences, args.points)
    result = run(fences, n_points)
    command = "python -m benchmarks.million" + (" --quick" if args.quick else "")
    if not args.quick and (args.fences, args.points) != (1_000_000, 1_000_000):
        command += f" --fences {args.fences} --points {args.points}"
    print(json.dumps(result, indent=1, default=str))
    if not args.no_write and not args.quick:
        write_section(section(result, command))


if __name__ == "__main__":
    main()

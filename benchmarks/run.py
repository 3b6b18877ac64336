"""The whole benchmark suite, bounded in time, into BENCHMARKS.md.

    python -m benchmarks.run [--quick] [--no-write]

1. the fence index: build time and memory per 10k fences, lookups against STRtree
   (``benchmarks.index``);
2. the same lookups answered by PostGIS (skipped with a message when its packages are
   missing: ``benchmarks.postgis``);
3. batch ingest in one process with Redis state, one device at a time against whole
   batches, and where the CPU goes (``benchmarks.ingest``);
4. what a flush of single pings costs in process, by size and by stage, redis-py's
   packer against hiredis's, and the screening of a call's pings in array steps against
   one after the other (``benchmarks.flush``);
5. the real service over HTTP with Redis state: batch ingest per core, single pings with
   wrk at 10 and 50 connections beside the service's own ceiling (``GET /healthz``), then
   at 50 connections to two workers on both cores, memory after the run
   (``benchmarks.http``);
6. the batch route again, in turns with the same route whose engine (lookups, screening,
   visit rules, offers) is taken out: what the route costs outside its engine, and so what
   the engine may cost for the route to reach the target (``benchmarks.floor``);

then the targets, measured against what was asked. Every comparison is made within this
run (ratios), since these machines are shared and their absolute speed varies.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from typing import Any

from benchmarks import floor, flush, http, index, ingest, postgis, workload
from benchmarks.report import write_all

Row = tuple[str, str, str, bool | None]


def targets(
    ix: dict[str, Any], pg: dict[str, Any] | None, web: dict[str, Any], bare: dict[str, Any]
) -> list[Row]:
    """(what, measured, target, met) for each target; met None when not measured."""
    runs = batch_runs(web, bare)
    batch = statistics.median(runs)
    single = web["summary"]
    of_ceiling = single.get("of_ceiling")
    rows: list[Row] = [
        (
            f"batch ingest over HTTP, Redis state: the median of {len(runs)} runs",
            f"{batch:,.0f} pings/s per core ({min(runs):,.0f} to {max(runs):,.0f})",
            "≥ 150,000",
            batch >= 150_000,
        ),
    ]
    if pg is not None:
        ratio = batch / pg["batch_per_s"]
        rows.append(
            (
                "… against PostGIS batched lookups (no state)",
                f"{ratio:.2f}×",
                "≥ 3.5×",
                ratio >= 3.5,
            )
        )
    else:
        rows.append(("… against PostGIS batched lookups", "not measured", "≥ 3.5×", None))
    rows += floor_rows(bare, pg)
    rows += [
        (
            (
                f"single pings of walking devices over HTTP, {web['connections']} connections, "
                "one process on one core: wall-clock req/s against `GET /healthz` of the same "
                "service, core and wrk, in turns (median of the rounds)"
            ),
            "not measured (no wrk)"
            if of_ceiling is None
            else (
                f"{of_ceiling['median']:.0%} ({single['rps']['median']:,.0f} against "
                f"{single['ceiling_rps']['median']:,.0f} req/s)"
            ),
            "≥ 60%",
            None if of_ceiling is None else of_ceiling["median"] >= 0.6,
        ),
        (
            f"… p99 at {web['connections']} connections (median of the rounds)",
            f"{single['p99_ms']['median']:.1f} ms",
            "≤ 10 ms",
            single["p99_ms"]["median"] <= 10.0,
        ),
        (
            "fence lookup, batch, against STRtree",
            f"{ix['batch_pps'] / ix['strtree_pps']:.2f}×",
            "≥ 1×, identical answers",
            ix["identical"] and ix["batch_pps"] >= ix["strtree_pps"],
        ),
        (
            "index memory per 10k fences",
            f"{ix['memory_mb_10k']:.1f} MB",
            "≤ 15 MB",
            ix["memory_mb_10k"] <= 15.0,
        ),
        (
            "index build per 10k fences",
            f"{ix['build_s_10k']:.2f} s",
            "≤ 3 s",
            ix["build_s_10k"] <= 3.0,
        ),
    ]
    return rows


def batch_runs(web: dict[str, Any], bare: dict[str, Any]) -> list[float]:
    """Pings per CPU second of every batch run of the service, each on a fresh stack: the
    HTTP section's and the floor section's. One run is 1 to 2 s of CPU, and moves by
    a fifth between runs on this machine."""
    return [web["batch"]["pings_per_cpu_s"], *bare["runs"][floor.SERVICE]]


def floor_rows(bare: dict[str, Any], pg: dict[str, Any] | None) -> list[Row]:
    """Not targets: the batch route with no engine (``benchmarks.floor``), which bounds
    what any engine behind it can reach, and against PostGIS."""
    what = "… the floor: the same route with no engine (parse, read, write, answer), same core"
    rows: list[Row] = [
        (
            what,
            (
                f"{bare['floor']:,.0f} pings/s per core: at {floor.TARGET:,} the engine may take "
                f"{bare['engine_budget_us']:.1f} µs a ping, it takes {bare['engine_us']:.1f}"
            ),
            "—",
            None,
        )
    ]
    if pg is not None:
        ratio = bare["floor"] / pg["batch_per_s"]
        rows.append(("… the floor against PostGIS batched lookups", f"{ratio:.2f}×", "—", None))
    return rows


def targets_section(rows: list[Row], command: str, took_s: float) -> str:
    mark = {True: "yes", False: "**no**", None: "—"}
    lines = ["| target | measured | asked | met |", "|---|---:|---:|:---:|"]
    lines += [f"| {what} | {got} | {asked} | {mark[met]} |" for what, got, asked, met in rows]
    return (
        "## Targets\n\n"
        f"`{command}` ({took_s / 60:.1f} min) on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, 2 cores shared with other work: "
        "absolute numbers move by ±30% between runs, ratios within one run much less.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def postgis_section(pg: dict[str, Any] | None) -> str:
    if pg is None:
        return "## Lookups against PostGIS\n\nSkipped: PostGIS is not installed here.\n"
    return (
        "## Lookups against PostGIS\n\n"
        "The same points (no visit state, no Redis) answered by `ST_Covers` on a GiST-indexed "
        "table in a throwaway cluster, one prepared query per point and in `unnest` batches "
        "of 10,000, against the fence index and STRtree in the same run.\n\n"
        f"{postgis.table(pg)}\n\n{postgis.summary(pg)}\n"
    )


def ingest_section(r: dict[str, Any], w: workload.Workload) -> str:
    stages = ingest.stage_table(r["stages"]) if "stages" in r else ""
    return (
        "## Batch ingest in one process\n\n"
        f"{describe(w)} The pipeline (screening, fence index, visit rules, offers, outbox) "
        "with Redis state, driven in one process pinned to one core; pings per CPU second of "
        "that process (Redis works in its own). Both ways from empty state on the same pings, "
        "with the same events and notifications.\n\n"
        f"{ingest.table(r)}\n\nWhole batch / one device at a time: {r['ratio']:.2f}×.\n\n"
        "Where the CPU goes (pyinstrument samples, own time of each frame by the stage of its "
        "file or its nearest caller's):\n\n"
        f"{stages}\n"
    )


def flush_section(r: dict[str, Any]) -> str:
    return (
        "## Single pings in flushes\n\n"
        "The single pings waiting together go as one flush (`geofence/service/coalescer.py`): "
        "one read of the profiles and states, the lookups and rules, one write. Flushes of 1, "
        "15 and "
        "100 pings, each ping the last position of another device, through that path with "
        "Redis state in one process; µs of CPU per ping, in all and by stage (timed around "
        "each stage's calls; `entries`: the offers of the flush's entries, decided together, "
        "and the funnel; `single-device way`: devices redone one by one after another worker "
        "wrote "
        "first).\n\n"
        f"{flush.table(r)}\n"
    )


def floor_section(r: dict[str, Any]) -> str:
    return (
        "## The batch route without its engine\n\n"
        "The batches above, to the service and to the same service whose `handle_many` keeps "
        "only its read and its write (`benchmarks/floor.py`: every device's state written "
        "back as read, in one call, every ping accepted), each on a fresh stack, in turns. "
        "Parsing, authorizing, the answer, aiohttp and the event loop are the real ones. Pings "
        "per CPU second of the service process; its CPU is counted in ticks of 10 ms.\n\n"
        f"{floor.table(r)}\n\n{floor.summary(r)}\n"
    )


ANALYSIS = """## Where the time goes, and what is left

Measured with pyinstrument in process, py-spy on the service under load, and the stage
timings of single-ping flushes above.

Batch ingest. Before: each device went the single-device way, one round trip to load and
one to write per device, a profile read per device, screening twice per ping, a shapely
Point per distance (about 20 µs each); the Redis client and the event loop took over half
the CPU. Now: the lookups of a whole batch are two vectorised calls; profiles, states and
compare-and-sets are one command each for the whole batch (they were one per shard, up to
16 each); redis-py's asyncio client packs commands with hiredis's C packer as its
synchronous client does (the packers line above); a batch of valid pings is decoded
in one typed pass; the entries of a whole batch are decided together (one read of the
profiles, offers and budgets; their ledgers and notifications go in the batch's one
compare-and-set call; one funnel addition per time bucket), where each device with an
entry went the single-device way with four to six round trips of its own; only the
fences a ping is inside, and those of open visits, go to the visit rules. The screening
of a whole batch is a few array steps (`screen_runs`, the scalar rules' verdicts to the
bit; a call of fewer than 128 pings is screened ping after ping, cheaper there), and a
device passing by (no open visit, no accepted ping inside a fence; about 70% of the pings
here) has its state moved in one step instead of through the visit rules ping by ping.
The batch lookups leave out the fences listed only for their exit band and those whose
grown bounding box misses the ping (61% of the remaining pairs here), and measure each
group's later pings to a store one of its pings is inside in the same vectorised call, so
no distance is left to one ping at a time. The visit rules copy a device's state, its
cooldowns and its events only where a ping changes them, the pings passing by share
their results, and each store's view for the rules is made once per catalogue. The
funnel's additions go on the store's lanes as one script call; the delivery claims from
all the outbox shards in one call (it was one per shard) and reads the profiles and
expects the receipts of a claimed round in one call each (they were one per
notification). What is left is Python per ping, spread thin: on the service under load
(py-spy) the lookups take about a sixth of the CPU, the visit rules of the devices near
stores about a seventh, the read of the profiles and states about a ninth, the write
and the parse each about a sixteenth, the screening, the offers and the delivery of the
notifications each about a twenty-fifth. A target of 150k pings/s per core is under
6.7 µs of CPU per ping for all of it. The floor section takes the engine out of the same
route: what is left (parsing, authorizing, the one read and the one write, the answer,
aiohttp and the event loop) costs 3 to 4 µs a ping, so at 150k the engine may take about
3 µs, where it takes 6 to 10 between runs (it slows the most on this machine's slow
spells, the `GET /healthz` ceiling with it). The target needs an engine about twice as
fast as this one, and no step of it is worth more than a few per cent.

Single pings. Before: three round trips per request (device check, load, write), about
1 ms of service CPU each, and a full garbage collection over the 10k-fence index (over
100 ms) every few seconds, which every request in flight waited through (p99 178 ms at
50 connections). Now: the pings that arrive together are handled together (one read of
their profiles and states together and one write per flush, see
`geofence/service/coalescer.py`), and the pings waiting when a flush writes are the next
flush, their devices read in the round trip of that write, so under load a flush makes
one round trip. The heap is frozen once a catalogue is installed, so a collection no
longer walks the index; the entries of a flush are decided together. The store's script
calls go on connections kept aside (`geofence/adapters/redis_lane.py`, the lane table
above): through redis-py's client each call also paid for its pool, its retries and a
task per write, 100-200 µs of CPU whatever its size. A flush of fewer than 32 pings is
looked up one point at a time and one of fewer than 128 screened ping after ping (the
two tables above): there, array steps cost more in fixed overhead than all the rest.
What is left, by py-spy on a worker of the two-worker run: aiohttp and the event loop
about 60% of the CPU (the socket writes of the answers alone about a tenth), the flushes
about 35%. The ceiling is the `GET /healthz` row: the same process, middlewares and core
answering with no work, 7k to 23k requests a second between runs on this machine. One
process uses one core: `GEOFENCE_WORKERS` runs several on one port, and the last row of
the HTTP section is two of them on this machine's two cores, which Redis and the load
generator share with them.
"""


def describe(w: workload.Workload) -> str:
    p = w.pings
    return (
        f"Workload: {len(w.fences):,} fences, {len(w.device_ids):,} devices, {len(p):,} pings "
        f"over {(w.ended_at - w.started_at) / 60:.0f} min in {len(p.uploads):,} uploads and "
        f"{len(p.batches()):,} batches."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter, a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.perf_counter()
    fences = 2_000 if args.quick else 10_000
    devices, minutes = (300, 15) if args.quick else (2_000, 30)
    ix = index.run(fences, 100_000 if args.quick else 1_000_000)
    pg = postgis.compare(fences, 20_000 if args.quick else 200_000)
    w = workload.make(fences=fences, devices=devices, duration_s=minutes * 60.0)
    ing = asyncio.run(ingest.measure(w, profile=True))
    fl = asyncio.run(flush.measure(w))
    web = http.measure(w, duration_s=2.0 if args.quick else 10.0, reps=1 if args.quick else 3)
    bare = floor.measure(w, duration_s=5.0 if args.quick else 20.0, rounds=1 if args.quick else 3)
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    sections = [
        targets_section(targets(ix, pg, web, bare), command, time.perf_counter() - started),
        index.section(ix, command),
        postgis_section(pg),
        ingest_section(ing, w),
        flush_section(fl),
        "## The service over HTTP\n\n" + describe(w) + "\n\n" + http.table(web) + "\n",
        floor_section(bare),
        ANALYSIS,
    ]
    print("\n".join(sections))
    if not args.no_write:
        write_all(sections)


if __name__ == "__main__":
    main()

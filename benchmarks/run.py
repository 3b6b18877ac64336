"""The whole benchmark suite, bounded in time, into BENCHMARKS.md.

    python -m benchmarks.run [--quick] [--no-write] [--section NAME ...]

Sections (``--section`` runs only those named, and rewrites only their part of
BENCHMARKS.md; without it every section runs, then the targets):

- ``index``: the fence index against shapely's STRtree, build time, memory
  (``benchmarks.index``);
- ``postgis``: the same lookups answered by PostGIS (``benchmarks.postgis``);
- ``batch``: batch ingest of the service against PostGIS's batched lookups, in turns, on
  the same cores, wall clock and CPU per ping (``benchmarks.batch``);
- ``ingest``: batch ingest in one process, one device at a time against whole batches,
  and where the CPU goes (``benchmarks.ingest``);
- ``flush``: what a flush of single pings costs in process, by size and by stage
  (``benchmarks.flush``);
- ``http``: the service over HTTP: batch ingest, single pings of walking devices against
  the ``GET /healthz`` ceiling in turns, two workers, memory (``benchmarks.http``);
- ``floor``: the batch route against the same route with its engine taken out
  (``benchmarks.floor``).

Every comparison is made within one run, its two sides in turns; every run records the
machine's load meanwhile, since these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import batch, floor, flush, http, index, ingest, machine, postgis, workload
from benchmarks.report import write_all, write_section

Row = tuple[str, str, str, bool | None]
SECTIONS = ("index", "postgis", "batch", "ingest", "flush", "http", "floor")
SINGLE_OF_CEILING = 0.6  # the single-ping goal: this share of the /healthz ceiling
P99_MS = 10.0
BATCH_OF_POSTGIS = 2.0  # the batch goal: this many times PostGIS, wall clock


@dataclass(frozen=True)
class Plan:
    """The sizes and durations of one run."""

    quick: bool
    fences: int
    devices: int
    minutes: int
    points: int
    pg_points: int
    duration_s: float
    reps: int

    @property
    def command(self) -> str:
        return "python -m benchmarks.run" + (" --quick" if self.quick else "")


QUICK = Plan(
    quick=True,
    fences=2_000,
    devices=300,
    minutes=15,
    points=100_000,
    pg_points=20_000,
    duration_s=2.0,
    reps=1,
)
FULL = Plan(
    quick=False,
    fences=10_000,
    devices=2_000,
    minutes=30,
    points=1_000_000,
    pg_points=200_000,
    duration_s=10.0,
    reps=3,
)


def _range(v: dict[str, float], fmt: str) -> str:
    return f"{v['median']:{fmt}} ({v['min']:{fmt}} to {v['max']:{fmt}})"


def targets(results: dict[str, Any]) -> list[Row]:
    """(what, measured, goal, met) for each goal; met None when not measured."""
    rows: list[Row] = []
    web, bat, ix = results.get("http"), results.get("batch"), results.get("index")
    if web is not None:
        m = web["summary"]
        of = m.get("of_ceiling")
        rows += [
            (
                (
                    f"single pings (`POST /v1/pings`, devices walking), {web['connections']} "
                    "connections, one process on one core: wall-clock req/s against `GET /healthz` "
                    "of the same service, core and wrk, rounds in turns; median (range)"
                ),
                "not measured (no wrk)"
                if of is None
                else (
                    f"{_range(of, '.0%')}: {m['rps']['median']:,.0f} against "
                    f"{m['ceiling_rps']['median']:,.0f} req/s"
                ),
                f"≥ {SINGLE_OF_CEILING:.0%}",
                None if of is None else of["median"] >= SINGLE_OF_CEILING,
            ),
            (
                f"… their p99 at {web['connections']} connections, median (range)",
                f"{_range(m['p99_ms'], '.1f')} ms",
                f"≤ {P99_MS:g} ms",
                m["p99_ms"]["median"] <= P99_MS,
            ),
        ]
    if bat is not None:
        m = bat["summary"]
        rows.append(
            (
                (
                    "batch ingest (`POST /v1/pings/batch`, the whole pipeline, service + Redis) "
                    "against PostGIS `ST_Covers` lookups of the same pings (server + client), "
                    f"batches of {batch.BATCH:,}, wall-clock pings/s on the same two cores, rounds "
                    "in turns; median (range)"
                ),
                (
                    f"{_range(m['ratio'], '.2f')}×: {m['service_per_s']['median']:,.0f} against "
                    f"{m['postgis_per_s']['median']:,.0f} pings/s"
                ),
                f"≥ {BATCH_OF_POSTGIS:g}×",
                m["ratio"]["median"] >= BATCH_OF_POSTGIS,
            )
        )
        two = bat["summary_two"]
        rows.append(
            (
                (
                    "… the same with two service workers against two PostGIS connections, all "
                    "free on both cores"
                ),
                (
                    f"{_range(two['ratio'], '.2f')}×: {two['service_per_s']['median']:,.0f} "
                    f"against {two['postgis_per_s']['median']:,.0f} pings/s"
                ),
                f"≥ {BATCH_OF_POSTGIS:g}×",
                two["ratio"]["median"] >= BATCH_OF_POSTGIS,
            )
        )
    elif "batch" in results:
        rows.append(("batch ingest against PostGIS", "not measured (no PostGIS)", "≥ 2×", None))
    if ix is not None:
        rows += index_rows(ix)
    return rows


def index_rows(ix: dict[str, Any]) -> list[Row]:
    return [
        (
            (
                "fence lookup, batch: `inside_many` (fence ids per point) against "
                "`STRtree.query(points, predicate=...)` (index pairs; tree and points made "
                "before the clock); best of 3"
            ),
            (
                f"{ix['batch_pps'] / ix['strtree_pps']:.2f}× "
                f"({ix['batch_pps'] / ix['strtree_grouped_pps']:.2f}× against STRtree with "
                "the same answers)"
            ),
            "≥ 1×, identical answers",
            ix["identical"] and ix["batch_pps"] >= ix["strtree_pps"],
        ),
        (
            (
                "index memory per 10k fences: RSS of a fresh process, the build's growth "
                "(GEOS's heap included); tracemalloc beside"
            ),
            f"{ix['rss_mib_10k']:.1f} MiB (tracemalloc {ix['memory_mb_10k']:.1f} MB)",
            "≤ 15 MB",
            ix["rss_mib_10k"] * 1.048576 <= 15.0,
        ),
        (
            "index build per 10k fences, best of 3",
            f"{ix['build_s_10k']:.2f} s",
            "≤ 3 s",
            ix["build_s_10k"] <= 3.0,
        ),
    ]


def targets_section(rows: list[Row], p: Plan, took_s: float, load: dict[str, float]) -> str:
    mark = {True: "yes", False: "**no**", None: "—"}
    lines = ["| goal: what is compared | measured | asked | met |", "|---|---:|---:|:---:|"]
    lines += [f"| {what} | {got} | {asked} | {mark[met]} |" for what, got, asked, met in rows]
    return (
        "## Targets\n\n"
        f"`{p.command}` ({took_s / 60:.1f} min) on {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, 2 cores. The machine was shared "
        f"with other work during the run (cores busy {load['machine_busy']:.0%} over the "
        f"whole run, load average {load['loadavg']:.1f} at its end): each section records "
        "the load of each of its runs, and the CPU time other processes took meanwhile; "
        "compare the ratios (each taken within one round, its two sides in turns) rather "
        "than absolute rates.\n\n" + "\n".join(lines) + "\n"
    )


def section_load(load: machine.Load) -> str:
    return (
        f"Machine during this section: cores busy {load.busy_s / load.wall_s / 2:.0%}, "
        f"load average {load.loadavg:.1f} at its end, {load.others_s:.1f} CPU s by processes "
        f"other than this one over {load.wall_s:.0f} s (Redis included where it is used)."
    )


def postgis_section(pg: dict[str, Any] | None) -> str:
    if pg is None:
        return "## Lookups against PostGIS\n\nSkipped: PostGIS is not installed here.\n"
    return (
        "## Lookups against PostGIS\n\n"
        "`python -m benchmarks.postgis`. The same points (no visit state, no Redis) "
        "answered by `ST_Covers` on a GiST-indexed table in a throwaway cluster, one prepared "
        "query per point and in `unnest` batches of 10,000 on one connection, against the "
        "fence index and STRtree in the same run. Timed: the queries and their fetch (PostGIS), "
        "the lookups alone (FenceIndex, STRtree); not timed: loading, building, the answers' "
        "comparison. All wall clock, in one process (PostGIS's server in its own).\n\n"
        f"{postgis.table(pg)}\n\n{postgis.summary(pg)}\n"
    )


def batch_section(r: dict[str, Any] | None) -> str:
    if r is None:
        return "## Batch ingest against PostGIS\n\nSkipped: PostGIS is not installed here.\n"
    one, two = batch.SETUPS
    return (
        "## Batch ingest against PostGIS\n\n"
        "`python -m benchmarks.batch`. "
        f"{r['fences']:,} fences; {r['pings']:,} pings of {r['devices']:,} devices a replay; "
        f"rounds of {r['duration_s']:g} s, the two systems in turns (the order flips every "
        "round). Timed: the service's whole pipeline over HTTP (parse, screening, lookups, "
        "visit rules, offers, outbox, the Redis round trips, the answer), the loader posting "
        f"the batches of {batch.BATCH:,} and reading the answers; PostGIS's `ST_Covers` join "
        f"of `unnest` batches of {batch.BATCH:,} points over as many connections as the "
        "service has workers, and the fetch of its rows. Not timed: registering the devices, "
        "loading the fences. Pings/s are wall clock; CPU per ping is each process's utime + "
        "stime (/proc; Redis's by `INFO cpu`). PostGIS answers only where each ping is: it "
        "keeps no state and applies no rule. A round replays the workload, each replay "
        "later in ts, until it has lasted its duration.\n\n"
        f"{one} ({one.in_flight} batch requests in flight):\n\n"
        f"{batch.table(r)}\n\n{batch.summary(r)}\n\n"
        f"{two} ({two.in_flight} batch requests in flight):\n\n"
        f"{batch.table(r, 'rounds_two')}\n\n{batch.summary(r, 'summary_two')}\n"
    )


def ingest_section(r: dict[str, Any], w: workload.Workload, load: machine.Load) -> str:
    stages = ingest.stage_table(r["stages"]) if "stages" in r else ""
    return (
        "## Batch ingest in one process\n\n"
        f"`python -m benchmarks.ingest --profile`. {describe(w)} The pipeline (screening, "
        "fence index, visit rules, offers, outbox) with Redis state, driven in one process "
        "pinned to one core; pings per CPU second of that process (Redis's CPU, in its own "
        "process, is not counted). Both ways from empty state on the same pings, with the "
        f"same events and notifications. {section_load(load)}\n\n"
        f"{ingest.table(r)}\n\nWhole batch / one device at a time, both per CPU second of "
        f"this process: {r['ratio']:.2f}×.\n\n"
        "Where the CPU goes (pyinstrument samples, own time of each frame by the stage of its "
        "file or its nearest caller's):\n\n"
        f"{stages}\n"
    )


def flush_section(r: dict[str, Any], load: machine.Load) -> str:
    return (
        "## Single pings in flushes\n\n"
        "`python -m benchmarks.flush`. The single pings waiting together go as one flush "
        "(`geofence/service/coalescer.py`): one read of the profiles and states, the lookups "
        "and rules, one write. Flushes of 1, 15 and 100 pings, each ping the last position of "
        "another device, through that path with Redis state in one process; µs of CPU of this "
        "process per ping (Redis's not counted), in all and by stage (timed around each "
        "stage's calls; `entries`: the offers of the flush's entries, decided together, and "
        "the funnel; `single-device way`: devices redone one by one after another worker "
        f"wrote first). {section_load(load)}\n\n"
        f"{flush.table(r)}\n"
    )


def http_section(r: dict[str, Any]) -> str:
    return (
        "## The service over HTTP\n\n"
        "`python -m benchmarks.http`. Timed: what wrk (or the batch loader) sends and "
        "receives, the service and Redis answering; req/s are wall clock, CPU per request "
        "each process's utime + stime over the run. Single pings: devices walking real "
        "tracks among the stores (`benchmarks/walks.py`: the shape of a real phone GPS track "
        "moved from store to store, stays in some), each request the next position of the "
        "next device with its own token; `GET /healthz` is the ceiling, the same process, "
        "middlewares, core and wrk answering with no work. The pings' rounds and the "
        "ceiling's take turns.\n\n"
        f"{http.table(r)}\n"
    )


def floor_section(r: dict[str, Any]) -> str:
    return (
        "## The batch route without its engine\n\n"
        "`python -m benchmarks.floor`. The batches of the HTTP section, to the service and to "
        "the same service whose `handle_many` keeps only its read and its write "
        "(`benchmarks/floor.py`: every device's state written back as read, in one call, "
        "every ping accepted), each on a fresh stack, in turns. Parsing, authorizing, the "
        "answer, aiohttp and the event loop are the real ones. Service CPU per ping (its "
        "CPU is counted in ticks of 10 ms), Redis's beside, and the wall-clock rate.\n\n"
        f"{floor.table(r)}\n\n{floor.summary(r)}\n"
    )


ANALYSIS = """## Where the time goes, and what is left

Measured with pyinstrument in process, py-spy on the service under load, and the stage
timings of single-ping flushes above.

Batch ingest: the lookups of a whole batch are two vectorised calls; profiles, states and
compare-and-sets one command each for the whole batch; the entries of a batch decided
together; a device passing by has its state moved in one step. What is left is Python per
ping, spread thin (on the service under load the lookups take about a sixth of the CPU,
the visit rules about a seventh, the read of the profiles and states about a ninth). The
floor section splits the route's CPU per ping into what it costs outside the engine and
the engine. On the wall-clock basis the batch section compares the whole system with
PostGIS's lookups alone, on the same two cores: the service also keeps every device's
state, applies the visit rules and offers, and answers each ping over HTTP.

Single pings: the pings that arrive together go as one flush (one read of their profiles
and states, one write), the heap is frozen once a catalogue is installed, and the store's
script calls go on connections kept aside (`geofence/adapters/redis_lane.py`). The
`GET /healthz` rounds are what the same process answers doing no work at all; a ping's
share of that ceiling is what the ping path costs beyond aiohttp and the event loop.

Baselines not measured: Tile38 (a Go server) is not built here: the machine has no Go
toolchain, and building it from source on these two shared cores was left out.
"""


def describe(w: workload.Workload) -> str:
    p = w.pings
    return (
        f"Workload: {len(w.fences):,} fences, {len(w.device_ids):,} devices, {len(p):,} pings "
        f"over {(w.ended_at - w.started_at) / 60:.0f} min in {len(p.uploads):,} uploads and "
        f"{len(p.batches()):,} batches."
    )


def run_sections(p: Plan, names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each section named, in the suite's order: its results and its text."""
    results: dict[str, Any] = {}
    texts: dict[str, str] = {}
    w = workload.make(fences=p.fences, devices=p.devices, duration_s=p.minutes * 60.0)

    def timed_load(run: Callable[[], Any]) -> tuple[Any, machine.Load]:
        before = machine.snapshot()
        out = run()
        return out, machine.since(before, 0.0)

    for name in names:
        if name == "index":
            results[name] = index.run(p.fences, p.points)
            texts[name] = index.section(results[name], p.command)
        elif name == "postgis":
            results[name] = postgis.compare(p.fences, p.pg_points)
            texts[name] = postgis_section(results[name])
        elif name == "batch":
            results[name] = batch.measure(w, duration_s=p.duration_s, reps=p.reps)
            texts[name] = batch_section(results[name])
        elif name == "ingest":
            r, load = timed_load(lambda: asyncio.run(ingest.measure(w, profile=True)))
            results[name] = r
            texts[name] = ingest_section(r, w, load)
        elif name == "flush":
            r, load = timed_load(lambda: asyncio.run(flush.measure(w)))
            results[name] = r
            texts[name] = flush_section(r, load)
        elif name == "http":
            results[name] = http.measure(w, duration_s=p.duration_s, reps=p.reps)
            texts[name] = http_section(results[name])
        elif name == "floor":
            results[name] = floor.measure(w, duration_s=p.duration_s, rounds=p.reps)
            texts[name] = floor_section(results[name])
    return results, texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller and shorter, a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--section", action="append", choices=SECTIONS, help="only this section (repeatable)"
    )
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
    names = [n for n in SECTIONS if n in (args.section or SECTIONS)]
    before = machine.snapshot()
    results, texts = run_sections(p, names)
    load = machine.since(before, 0.0)
    sections = [texts[n] for n in names]
    if args.section is None:
        took = load.wall_s
        head = targets_section(targets(results), p, took, load.as_dict())
        sections = [head, *sections, ANALYSIS]
    print("\n".join(sections))
    if args.no_write:
        return
    if args.section is None:
        write_all(sections)
    else:
        for text in sections:
            write_section(text)


if __name__ == "__main__":
    main()

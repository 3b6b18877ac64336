"""Batch ingest of the service against PostGIS's batched lookups, in turns, on the same cores.

    python -m benchmarks.batch [--devices 2000] [--duration 10] [--reps 3]

Both sides answer the same pings (the workload's, ``benchmarks.workload``) in batches of
1,000, in rounds that take turns (the order flips every round):

- the service: ``POST /v1/pings/batch`` of the whole pipeline (screening, lookups, visit
  rules, offers, the outbox, Redis state), one process pinned to core 0, its Redis and
  the loader (two requests in flight) on core 1. A round replays the workload as many
  times as it takes (each replay later in ts, so that every ping is new to its device).
- PostGIS: ``ST_Covers`` of the same points joined against the GiST-indexed fences
  (``benchmarks.postgis``), ``unnest`` batches of 1,000 over a pool of one connection
  (as many as the service has workers), its backend pinned to core 0, the client to core 1.
  PostGIS only looks up: no state, no rules.

Then the same with two: the service with two workers (``GEOFENCE_WORKERS=2``, four
requests in flight) against a pool of two connections, everything free on both cores.

Each round: wall-clock pings/s of the whole system (the service with Redis, the PostGIS
server), their ratio, and the CPU each process spent per ping (the service, Redis and the
loader; PostGIS's backend and its client), with the machine's load meanwhile.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import http, machine, postgis
from benchmarks import workload as wl

BATCH = 1_000  # pings a request, and points a PostGIS query
RATE_BOUND = 60_000  # pings/s a round's replays are enough for


def measure(workload: wl.Workload, *, duration_s: float, reps: int) -> dict[str, Any] | None:
    """None (after a line on stderr) when PostGIS cannot run here."""
    try:
        server = postgis.find_server()
        with (
            postgis.cluster(server) as conninfo,
            postgis.connect(conninfo) as conn,
            http.stack(workload) as s,
        ):
            postgis.load(conn, workload.fences)
            version = postgis.short_version(conn)
            rounds = reps * len(SETUPS)
            per_round = laps_per_round(workload, duration_s, rounds)
            ends = http.lap_ends(workload, per_round * rounds)
            laps = [ends[n * per_round : (n + 1) * per_round] for n in range(rounds)]
            one = _rounds(s, conninfo, workload, duration_s, laps[:reps], SETUPS[0])
            with http.with_workers(s, SETUPS[1].workers) as both:
                two = _rounds(both, conninfo, workload, duration_s, laps[reps:], SETUPS[1])
    except postgis.Unavailable as e:
        print(f"postgis: skipped: {e}")
        return None
    return {
        "version": version,
        "rounds": one,
        "summary": summarize(one),
        "rounds_two": two,
        "summary_two": summarize(two),
        "pings": len(workload.pings),
        "devices": len(workload.device_ids),
        "fences": len(workload.fences),
        "duration_s": duration_s,
    }


def laps_per_round(workload: wl.Workload, duration_s: float, rounds: int) -> int:
    """Replays of the workload a round may need at :data:`RATE_BOUND`, as many as fit in
    the day's pings of ``rounds`` rounds (a round with fewer ends when they are done)."""
    wanted = math.ceil(duration_s * RATE_BOUND / len(workload.pings))
    fit = int(http.MAX_REPLAY_S // (http.lap_span(workload) * rounds))
    return max(1, min(wanted, fit))


@dataclass(frozen=True)
class Setup:
    """How both systems run: the service's workers and PostGIS's connections (as many),
    and where (``None``: free on every core)."""

    workers: int
    server_core: str | None  # the service's, or PostGIS's backends'
    load_core: str | None  # Redis's and the loader's, or PostGIS's client's
    in_flight: int  # batch requests the loader keeps in flight

    def __str__(self) -> str:
        if self.server_core is None:
            return f"{self.workers} workers / connections, all free on both cores"
        return (
            f"{self.workers} worker / connection on core {self.server_core}, Redis and the "
            f"loader (or PostGIS's client) on core {self.load_core}"
        )


SETUPS = (
    Setup(1, http.SERVICE_CORE, http.LOAD_CORE, http.BATCH_CONNECTIONS),
    Setup(2, None, None, 2 * http.BATCH_CONNECTIONS),
)


def _rounds(
    s: http.Stack,
    conninfo: str,
    workload: wl.Workload,
    duration_s: float,
    laps: list[list[float]],
    setup: Setup,
) -> list[dict[str, Any]]:
    """A round for each of ``laps`` (the workload's replays, by when each ends)."""
    lats = np.asarray(workload.pings.lat, dtype=np.float64)
    lngs = np.asarray(workload.pings.lng, dtype=np.float64)
    rounds = []
    for rep, ends in enumerate(laps):
        sides = ["service", "postgis"] if rep % 2 == 0 else ["postgis", "service"]
        out: dict[str, Any] = {}
        for side in sides:
            if side == "service":
                out[side] = http.run_batch(s, workload, duration_s, ends, setup.in_flight)
            else:
                out[side] = _postgis(conninfo, lats, lngs, duration_s, setup)
        rounds.append(out)
    return rounds


def _postgis(
    conninfo: str, lats: Any, lngs: Any, duration_s: float, setup: Setup
) -> dict[str, Any]:
    """The client where the service's loader runs, the backends where the service does."""
    cores = machine.cores_of(0)
    machine.pin(0, setup.load_core or cores)
    try:
        run = postgis.pool_run(
            conninfo,
            lats,
            lngs,
            connections=setup.workers,
            batch=BATCH,
            duration_s=duration_s,
            backend_cores=setup.server_core,
        )
    finally:
        machine.pin(0, cores)
    return run.as_dict()


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    service = [r["service"] for r in rounds]
    pg = [r["postgis"] for r in rounds]
    return {
        "service_per_s": spread([x["pings_per_s"] for x in service]),
        "postgis_per_s": spread([x["points_per_s"] for x in pg]),
        "ratio": spread(
            [r["service"]["pings_per_s"] / r["postgis"]["points_per_s"] for r in rounds]
        ),
        "service_us": spread([x["service_us"] for x in service]),
        "redis_us": spread([x["redis_us"] for x in service]),
        "backend_us": spread([x["backend_us"] for x in pg]),
    }


def _range(v: dict[str, float], fmt: str) -> str:
    return f"{v['median']:{fmt}} ({v['min']:{fmt}} to {v['max']:{fmt}})"


def table(r: dict[str, Any], key: str = "rounds") -> str:
    lines = [
        "| round | system | pings/s, wall clock | CPU µs a ping | machine |",
        "|---:|---|---:|---|---|",
    ]
    for n, rnd in enumerate(r[key], 1):
        for side, x in rnd.items():
            if side == "service":
                what = "the service + Redis, batch route"
                rate = x["pings_per_s"]
                cpu = (
                    f"service {x['service_us']:.1f}, Redis {x['redis_us']:.1f}, "
                    f"loader {x['loader_us']:.1f}"
                )
            else:
                what = "PostGIS"
                rate = x["points_per_s"]
                cpu = f"backend {x['backend_us']:.1f}, client {x['client_us']:.1f}"
            lines.append(f"| {n} | {what} | {rate:,.0f} | {cpu} | {machine.describe(x)} |")
    return "\n".join(lines)


def summary(r: dict[str, Any], key: str = "summary") -> str:
    m = r[key]
    rounds = len(r[key.replace("summary", "rounds")])
    service, pg = _range(m["service_per_s"], ",.0f"), _range(m["postgis_per_s"], ",.0f")
    return (
        f"Median of {rounds} rounds (range): the service {service} pings/s, PostGIS "
        f"{pg} points/s, both wall clock on the same two cores: the service / PostGIS "
        f"{_range(m['ratio'], '.2f')}×. CPU a ping: service {_range(m['service_us'], '.1f')} µs "
        f"+ Redis {_range(m['redis_us'], '.1f')} µs, against PostGIS's backend "
        f"{_range(m['backend_us'], '.1f')} µs. {r['version']}."
    )


def main() -> None:
    parser = http.arguments("python -m benchmarks.batch", __doc__)
    args = parser.parse_args()
    w = wl.make(fences=http.FENCES, devices=args.devices, duration_s=1_800.0)
    r = measure(w, duration_s=args.duration, reps=args.reps)
    if r is not None:
        for n, setup in enumerate(SETUPS):
            suffix = "_two" if n else ""
            text = f"{table(r, 'rounds' + suffix)}\n\n{summary(r, 'summary' + suffix)}"
            print(f"{setup}:\n\n{text}\n")


if __name__ == "__main__":
    main()

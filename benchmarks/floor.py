"""The batch route with no engine: what it costs when the lookups, the screening, the
visit rules and the offers cost nothing.

    python -m benchmarks.floor [--devices 2000] [--duration 20] [--rounds 3]

The batches of ``benchmarks.http`` go to two services, each on a fresh stack of its own
(a redis-server, the devices registered), the two taking turns round after round: the
real one, and one whose ``PingService.handle_many`` keeps only what the route pays
whatever its engine does: the profiles and states come in the route's one read (as
always), every device's state goes back in one compare-and-set call, and every ping gets
an accepted result. Parsing, authorizing, encoding the answer, aiohttp and the event loop
are the real ones.

The second service's pings per CPU second bound what any engine behind this route can
reach on this machine; the difference of the two costs per ping is what the engine costs
now, and the budget is what it may cost for the route to reach a target.

    python -m benchmarks.floor serve [flags of geofence serve]

runs that second service (one process: ``GEOFENCE_WORKERS`` would start workers without
the change).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import http
from benchmarks import workload as wl
from geofence import cli
from geofence.domain.errors import NotFound
from geofence.domain.model import Ping
from geofence.engine.device import PingResult
from geofence.ports import StateWrite, StoredState
from geofence.service.pings import PingService
from tools.processes import SERVE

NO_ENGINE = [sys.executable, "-m", "benchmarks.floor", "serve"]
SERVICE, FLOOR = "the service", "no engine"
SIDES = ((SERVICE, SERVE), (FLOOR, NO_ENGINE))
TARGET = 150_000  # pings/s per core, the batch target
ACCEPTED = PingResult(status="accepted", reason=None, events=[])


async def no_engine(
    self: PingService,
    groups: Sequence[tuple[str, Sequence[Ping]]],
    *,
    loaded: Mapping[str, StoredState] | None = None,
    **_options: object,  # now, explain, ahead: nothing to decide, nothing to read ahead
) -> list[list[PingResult] | NotFound]:
    """``handle_many`` with only its read and its write, through the service's ports alone:
    each device's state written back as it was read, in one call, and every ping accepted
    (and counted in the metrics)."""
    refs = list(dict.fromkeys(ref for ref, _ in groups))
    stored = dict(loaded or {})
    missing = [ref for ref in refs if ref not in stored]
    if missing:
        stored.update(zip(missing, await self.store.load_states(missing), strict=True))
    writes = [StateWrite(ref=r, state=stored[r].state, version=stored[r].version) for r in refs]
    await self.store.save_states(writes)
    self.metrics.pings.labels("accepted", "").inc(sum(len(pings) for _, pings in groups))
    return [[ACCEPTED] * len(pings) for _, pings in groups]


def serve(argv: Sequence[str]) -> int:
    """``geofence serve`` with :func:`no_engine` in place of the public ``handle_many``, in
    this process only."""
    PingService.handle_many = no_engine  # type: ignore[method-assign]
    return cli.main(["serve", *argv])


def measure(workload: wl.Workload, *, duration_s: float, rounds: int) -> dict[str, Any]:
    """Pings per CPU second of the service process, each side once a round, in turns."""
    runs: dict[str, list[float]] = {name: [] for name, _ in SIDES}
    for _ in range(rounds):
        for name, command in SIDES:
            with http.stack(workload, command) as s:
                batch = http.run_batch(s, workload, duration_s)
            if sum(batch["results"].values()) != batch["pings"]:
                raise AssertionError(f"{name}: not every ping was answered: {batch['results']}")
            runs[name].append(batch["pings_per_cpu_s"])
    return {"runs": runs, "pings": batch["pings"], **budget(*map(statistics.median, runs.values()))}


def budget(service: float, floor: float, target: float = TARGET) -> dict[str, float]:
    """µs of CPU per ping: the route, its part outside the engine, the engine now, and
    what the engine may cost for the route to reach ``target`` (below zero: no engine
    can)."""
    route_us, floor_us = 1e6 / service, 1e6 / floor
    return {
        "service": service,
        "floor": floor,
        "route_us": route_us,
        "floor_us": floor_us,
        "engine_us": route_us - floor_us,
        "engine_budget_us": 1e6 / target - floor_us,
    }


def table(r: Mapping[str, Any]) -> str:
    rows = [
        f"| batch route, {r['pings']:,} pings a run | pings/s per core, median | runs |",
        "|---|---:|---|",
    ]
    for name, runs in r["runs"].items():
        rows.append(
            f"| {name} | {statistics.median(runs):,.0f} | {', '.join(f'{x:,.0f}' for x in runs)} |"
        )
    return "\n".join(rows)


def summary(r: Mapping[str, Any], target: float = TARGET) -> str:
    return (
        f"The route outside the engine: {r['floor_us']:.1f} µs of CPU per ping; the engine "
        f"now: {r['engine_us']:.1f} µs; at {target:,.0f} pings/s per core the engine may "
        f"take {r['engine_budget_us']:.1f} µs ({r['engine_budget_us'] / r['engine_us']:.0%} "
        f"of now). No engine: {r['floor'] / r['service']:.2f}× the service."
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        sys.exit(serve(args[1:]))
    parser = http.arguments("python -m benchmarks.floor", __doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parsed = parser.parse_args(args)
    if parsed.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = measure(http.workload_of(parsed), duration_s=parsed.duration, rounds=parsed.rounds)
    print(table(result))
    print(summary(result))


if __name__ == "__main__":
    main()

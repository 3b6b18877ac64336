"""The batch route with no engine: what it costs when the lookups, the screening, the
visit rules and the offers cost nothing.

    python -m benchmarks.floor [--devices 2000] [--duration 10] [--rounds 3]

The batches of ``benchmarks.http`` go to two services, each on a fresh stack of its own
(a redis-server, the devices registered), the two taking turns round after round: the
real one, and one whose ``PingService.handle_many`` keeps only what the route pays
whatever its engine does: the profiles and states come in the route's one read (as
always), every device's state goes back in one compare-and-set call, and every ping gets
an accepted result. Parsing, authorizing, encoding the answer, aiohttp and the event loop
are the real ones.

The second service's CPU per ping is what the route costs outside any engine (a bound on
what an engine behind this route can reach on this machine); the difference of the two
costs per ping is what the engine costs now. A run replays the workload, later in ts each
time, until it has lasted its duration; wall-clock pings/s and Redis's CPU per ping are
shown beside.

    python -m benchmarks.floor serve [flags of geofence serve]

runs that second service (one process: ``GEOFENCE_WORKERS`` would start workers without
the change).
"""

from __future__ import annotations

import math
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
RATE_BOUND = 100_000  # pings/s a run's replays of the workload are enough for
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
    """Each side once a round, in turns, each on a fresh stack: wall-clock pings/s and
    the CPU per ping of the service process and of Redis."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in SIDES}
    wanted = math.ceil(duration_s * RATE_BOUND / len(workload.pings))
    laps = max(1, min(wanted, int(http.MAX_REPLAY_S // http.lap_span(workload))))
    for _ in range(rounds):
        for name, command in SIDES:
            with http.stack(workload, command) as s:
                batch = http.run_batch(s, workload, duration_s, http.lap_ends(workload, laps))
            if sum(batch["results"].values()) != batch["pings"]:
                raise AssertionError(f"{name}: not every ping was answered: {batch['results']}")
            runs[name].append(batch)
    median = {
        name: statistics.median(run["service_us"] for run in done) for name, done in runs.items()
    }
    return {
        "runs": runs,
        "route_us": median[SERVICE],
        "floor_us": median[FLOOR],
        "engine_us": median[SERVICE] - median[FLOOR],
    }


def table(r: Mapping[str, Any]) -> str:
    rows = [
        (
            "| batch route | service CPU µs a ping, median | runs | Redis CPU µs a ping "
            "| pings/s, wall clock |"
        ),
        "|---|---:|---|---|---|",
    ]
    for name, runs in r["runs"].items():
        cpu = statistics.median(x["service_us"] for x in runs)
        each = ", ".join(f"{x['service_us']:.1f}" for x in runs)
        redis = ", ".join(f"{x['redis_us']:.1f}" for x in runs)
        wall = ", ".join(f"{x['pings_per_s']:,.0f}" for x in runs)
        rows.append(f"| {name} | {cpu:.1f} | {each} | {redis} | {wall} |")
    return "\n".join(rows)


def summary(r: Mapping[str, Any]) -> str:
    return (
        f"The route outside the engine: {r['floor_us']:.1f} µs of service CPU a ping; the "
        f"engine: {r['engine_us']:.1f} µs ({r['engine_us'] / r['route_us']:.0%} of the route's "
        f"{r['route_us']:.1f} µs)."
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

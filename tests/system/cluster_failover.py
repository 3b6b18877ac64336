"""Primaries of a Redis Cluster killed (SIGKILL) under load: notifications acknowledged vs
delivered, with ``GEOFENCE_REDIS_WAIT_REPLICAS`` off and at 1, in the same run.

The figures of the README's "Durability" for a Redis Cluster::

    .venv/bin/python -m tests.system.cluster_failover --failovers 3

A cluster of its own (3 primaries, 3 replicas, AOF ``appendfsync everysec``,
``cluster-node-timeout`` 2 s) on free ports from 40000, the fake gateway and two
``geofence serve`` on it: one with WAIT off, one with ``GEOFENCE_REDIS_WAIT_REPLICAS=1``,
each pinged by half of 200 walkers (100 single pings/s in all; a ping answered 503 or
not at all is resent after its Retry-After, as the SDK does). Each push takes the
gateway 0.2 s, so deliveries (and their leases) are in flight at every kill. (A gateway
failing for the whole run would not do: its pushes' backoff, with full jitter up to
300 s, would leave some undelivered at the end whatever Redis did.) Every ``--every-s``
a primary is killed, its replica's promotion waited for, and the killed node started
again (it comes back as a replica of the new primary and syncs) before the next kill.
Then the run waits for every acknowledged notification to be delivered (``--drain-s``).

Replication is asynchronous: a write the primary acknowledged but had not yet sent to
its replica when it was killed is lost with it. With WAIT, a ping whose notifications
are not on a replica is answered 503 and resent; the resend finds the state the new
primary has (``stale`` if the write survived, applied again if it was lost). Loss is
counted per setting; the latency of the pings whose answer carried notifications is
compared outside the failovers (from each kill to ``CALM_AFTER_S`` later): the cost of
WAIT, a round trip to the replica.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.system.cluster import Cluster, wait_delivered
from tests.system.durability import Count, count
from tests.system.history import Attempt, History, percentile
from tests.system.load import Load, client_session, offered_fleet
from tests.system.walkers import Town
from tools.redis_cluster import RedisCluster, free_base

RATE = 100  # single pings/s, both services together
PERIOD_S = 2.0
REDIS_TIMEOUT_S = 1.0
SETTINGS = {"off": 0, "1": 1}  # GEOFENCE_REDIS_WAIT_REPLICAS of each service
PUSH_S = 0.2
CALM_AFTER_S = 12.0  # a failover's effects are over by then (measured: 4-9 s)
IN_FLIGHT_S = 2.0  # a ping sent this close before the next kill may meet it


@dataclass(frozen=True)
class Failover:
    port: int  # the primary killed
    at: float  # monotonic
    promoted_s: float  # until its replica was a primary and the cluster ok
    synced_s: float  # until the killed node, started again, was its replica in sync


@dataclass
class Setting:
    """What the clients of one service saw."""

    name: str
    history: History
    count: Count | None = None

    def answers(self) -> Counter[str]:
        return self.history.answers()

    def server_errors(self) -> list[Attempt]:
        """5xx answers other than 503, and pings that got no answer at all."""
        return [
            a
            for a in self.history
            if a.status is None or a.status in range(500, 600)
            if a.status != 503
        ]

    def notified_latency(self, kills: Sequence[float]) -> tuple[float, float, int]:
        """p50, p99 and count of the acknowledged pings with notifications sent outside
        the failovers (from a kill to ``CALM_AFTER_S`` later)."""
        waits = [
            a.latency_s
            for a in self.history
            if a.acked
            and a.body["notifications"]
            and not any(0 <= a.sent - at < CALM_AFTER_S for at in kills)
        ]
        return percentile(waits, 50), percentile(waits, 99), len(waits)

    def recovered_s(self, failover: Failover, until: float) -> float:
        """From the kill to the last ping sent before ``until`` that was not answered
        200: how long this service's clients saw the failover."""
        until -= IN_FLIGHT_S
        late = [a.sent for a in self.history if failover.at <= a.sent < until and not a.acked]
        return max(late, default=failover.at) - failover.at


@dataclass
class Run:
    failovers: list[Failover] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    started: float = 0.0

    def report(self) -> list[str]:
        kills = [f.at for f in self.failovers]
        ends = [f.at for f in self.failovers[1:]] + [math.inf]
        lines = [
            f"failover {i}: primary :{f.port} killed at {f.at - self.started:.1f} s, replica"
            f" promoted in {f.promoted_s:.1f} s, old primary back as replica in {f.synced_s:.1f} s"
            for i, f in enumerate(self.failovers)
        ]
        for s in self.settings:
            p50, p99, n = s.notified_latency(kills)
            recovered = [s.recovered_s(f, end) for f, end in zip(self.failovers, ends, strict=True)]
            lines += [
                f"WAIT replicas {s.name}: pings={s.history.pings()} {dict(s.answers())}",
                f"  notifications: {s.count}",
                (
                    f"  pings with notifications outside the failovers: n={n}"
                    f" p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms"
                ),
                "  last non-200 after each kill: " + ", ".join(f"{r:.1f} s" for r in recovered),
            ]
        return lines


async def primaries_killed(
    logs: Path,
    *,
    failovers: int,
    first_at_s: float,
    every_s: float,
    drain_s: float,
    walkers: int = RATE * int(PERIOD_S),
) -> Run:
    redis_cluster = RedisCluster(logs, base_port=free_base(6))
    deployment = Cluster(
        logs,
        services=len(SETTINGS),
        redis_cluster=redis_cluster,
        redis_timeout_s=REDIS_TIMEOUT_S,
        push_timeout_s=1,
    )
    for service, replicas in zip(deployment.services, SETTINGS.values(), strict=True):
        service.env["GEOFENCE_REDIS_WAIT_REPLICAS"] = str(replicas)
    load_s = first_at_s + failovers * every_s
    run = Run()
    try:
        deployment.start()
        town = Town(deployment.settings)
        async with client_session() as session:
            slow = {"for_s": 3600, "behaviour": ["hang", PUSH_S]}
            fleet = await offered_fleet(
                session, deployment, town, walkers, label="f", seed=21, gateway=slow
            )
            load = Load(session, deployment.urls, period_s=PERIOD_S)  # device i: urls[i % 2]
            running = asyncio.create_task(load.run(fleet, load_s))
            run.started = load.started
            for k in range(failovers):
                await load.at(first_at_s + k * every_s)
                run.failovers.append(await asyncio.to_thread(fail_over, redis_cluster, k))
            history = await running
            acknowledged = history.notifications()
            calls = await wait_delivered(session, deployment.gateway_url, acknowledged, drain_s)
        for name, url in zip(SETTINGS, deployment.urls, strict=True):
            own = History([a for a in history if a.target == url])
            run.settings.append(Setting(name, own, count(own.notifications(), calls)))
    finally:
        deployment.stop()
    return run


def fail_over(redis_cluster: RedisCluster, k: int) -> Failover:
    """SIGKILL the k-th primary (in turn), wait for its replica's promotion, start the
    killed node again and wait for it to be in sync as the new primary's replica."""
    primaries = redis_cluster.primary_nodes()
    primary = primaries[k % len(primaries)]
    replica = redis_cluster.replica_of(primary)
    at = time.monotonic()
    primary.kill9()
    promoted_s = redis_cluster.wait_promoted(replica)
    primary.start()
    redis_cluster.wait_synced(primary)
    return Failover(primary.port, at, promoted_s, time.monotonic() - at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--first-at-s", type=float, default=20.0)
    parser.add_argument("--every-s", type=float, default=20.0)
    parser.add_argument("--drain-s", type=float, default=90.0)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="geofence-failover-") as logs:
        run = asyncio.run(
            primaries_killed(
                Path(logs),
                failovers=args.failovers,
                first_at_s=args.first_at_s,
                every_s=args.every_s,
                drain_s=args.drain_s,
            )
        )
    print("\n".join(run.report()))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

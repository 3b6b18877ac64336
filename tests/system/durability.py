"""Redis killed (SIGKILL) mid-load and restarted: notifications acknowledged vs delivered.

The figures of the README's "Durability", for Redis as the README runs it (AOF,
``appendfsync everysec``) and, for comparison, without persistence
(``--appendonly no --save ""``)::

    .venv/bin/python -m tests.system.durability                    # AOF everysec
    .venv/bin/python -m tests.system.durability --no-persistence   # nothing persisted

A deployment of its own (redis-server, the fake gateway, ``geofence serve``) on free
ports; 200 walkers at 100 single pings/s; the gateway answers 503 until the kill, so
notifications wait in the outbox then, as they do when a gateway is slow or down; Redis
is killed and restarted on its port; then the gateway answers 200 and the run waits for
every acknowledged notification to be delivered (at most ``--drain-s``). Not run by
pytest: the durable case runs with its assertions in ``test_faults``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.system.checker import deliveries
from tests.system.cluster import running_cluster, wait_delivered
from tests.system.history import History
from tests.system.load import Load, client_session, offered_fleet
from tests.system.walkers import Town

RATE = 100
PERIOD_S = 2.0


@dataclass(frozen=True)
class Count:
    """Notifications a run's clients were shown (acknowledged pings' answers), how many
    of them the gateway answered 200, and the ones never delivered."""

    acknowledged: int
    delivered: int
    lost: int

    def __str__(self) -> str:
        return f"acknowledged={self.acknowledged} delivered={self.delivered} lost={self.lost}"


def count(acknowledged: Collection[str], calls: list[dict[str, Any]]) -> Count:
    delivered = deliveries(calls).delivered & set(acknowledged)
    return Count(len(acknowledged), len(delivered), len(set(acknowledged) - delivered))


async def redis_killed(
    logs: Path, *, durable: bool, load_s: float, kill_at_s: float, down_s: float, drain_s: float
) -> tuple[Count, History]:
    with running_cluster(logs, durable=durable, push_timeout_s=1) as cluster:
        town = Town(cluster.settings)
        async with client_session() as session:
            down = {"for_s": kill_at_s, "behaviour": ["status", 503]}
            fleet = await offered_fleet(
                session, cluster, town, RATE * 2, label="d", seed=12, gateway=down
            )
            load = Load(session, cluster.urls, period_s=PERIOD_S)
            run = asyncio.create_task(load.run(fleet, load_s))
            await load.at(kill_at_s)
            cluster.redis.kill9()
            await asyncio.sleep(down_s)
            cluster.redis.start()
            await asyncio.to_thread(cluster.redis.wait_ready)
            history = await run
            acknowledged = history.notifications()
            calls = await wait_delivered(session, cluster.gateway_url, acknowledged, drain_s)
    return count(acknowledged, calls), history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-persistence", action="store_true", help='--appendonly no --save ""')
    parser.add_argument("--load-s", type=float, default=40.0)
    parser.add_argument("--kill-at-s", type=float, default=25.0)
    parser.add_argument("--down-s", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=90.0)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="geofence-durability-") as logs:
        result, history = asyncio.run(
            redis_killed(
                Path(logs),
                durable=not args.no_persistence,
                load_s=args.load_s,
                kill_at_s=args.kill_at_s,
                down_s=args.down_s,
                drain_s=args.drain_s,
            )
        )
    redis = 'no persistence (--appendonly no --save "")' if args.no_persistence else "AOF everysec"
    print(f"Redis with {redis}, killed at {args.kill_at_s:g} s for {args.down_s:g} s:")
    print(f"  pings: {history.pings()} {dict(history.answers())}")
    print(f"  notifications: {result}")
    print(f"  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

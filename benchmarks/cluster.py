"""Single pings on a Redis Cluster of 1 primary vs 3 primaries (and on a single Redis,
the baseline): what each costs, for sizing.

    python -m benchmarks.cluster [--reps 3] [--seconds 10] [--devices 600]

Two clusters of its own (AOF ``everysec``, no replicas: a replica's cost is its
primary's writes again, on a host of its own), one of 1 primary and one of 3, and a
single redis-server (AOF too), on free ports from 40000, and one ``geofence serve`` (one
worker) on each. The same closed-loop load goes to each in turn, interleaved (single, 1,
3, single, ...): ``--concurrency`` clients, each sending the pings of its own devices one
after another. Every device stays inside one of the sample stores: a warm-up longer
than the dwell makes each enter once (and its notification pushed, to stdout), so the
measured reps are the steady pings of devices present, as most pings are. Per rep, from
deltas over it:

- pings/s answered 200;
- the service's CPU per ping (utime + stime of its process, /proc);
- the primaries' CPU per ping (their processes, /proc), and the busiest one's share of
  a core;
- Redis commands per ping (``INFO commandstats`` summed over the primaries; the
  commands a script runs count too), and of them EVALSHA (the calls the service sent);
- the machine's load average at the end of the rep.

And once, before the load: the commands a second each Redis runs while its service is
idle (its dispatcher's look at the outbox shards), and after the reps, on the single
Redis, the memory of a device's keys (``MEMORY USAGE``).

Printed: median and spread (min-max) of each over the reps. On a 2-core host shared with
the load generator the service's one core is the limit: 3 primaries do not serve more
pings/s here, they spread the same Redis work over more processes. Every service also
runs its dispatcher, which looks at the outbox shards while idle; its commands count in
each rep as they would in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import shapely
from shapely.geometry import shape

from geofence.adapters.redis import Keys
from geofence.domain.devices import device_ref
from tools.processes import ROOT, SERVE, Process, RedisServer, free_port, service_env, wait_http
from tools.redis_cluster import ClusterNode, RedisCluster, free_base

SDK = {"Authorization": "Bearer sys-sdk-key-000001"}
ADMIN = {"Authorization": "Bearer sys-admin-key-0001"}
TICKS = os.sysconf("SC_CLK_TCK")
DWELL_S = 5
PREFIX = "gfbench"
ID_SECRET = "sys-id-secret"  # service_env's GEOFENCE_ID_SECRET
WARM_UP_S = 15


@dataclass
class Target:
    name: str
    primaries: list[ClusterNode] | list[RedisServer]
    service: Process
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def commands(node: ClusterNode | RedisServer) -> tuple[int, int]:
    """Commands the server ran (those of scripts included), and of them EVALSHA."""
    with node.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
    evalsha = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return sum(int(v["calls"]) for v in stats.values()), evalsha


def all_commands(nodes: Sequence[ClusterNode | RedisServer]) -> tuple[int, int]:
    counts = [commands(n) for n in nodes]
    return sum(c for c, _ in counts), sum(e for _, e in counts)


def store_points() -> list[tuple[float, float]]:
    doc = msgspec.json.decode((ROOT / "stores.geojson").read_bytes())
    points = shapely.point_on_surface([shape(f["geometry"]) for f in doc["features"]])
    return [(p.y, p.x) for p in points]


@contextlib.contextmanager
def deployed(logs: Path, primaries: int) -> Iterator[Target]:
    """A service on a cluster of ``primaries`` (0: on a single Redis, not a cluster)."""
    redis_cluster = None
    if primaries:
        base = free_base(primaries)
        redis_cluster = RedisCluster(
            logs / f"p{primaries}", base_port=base, primaries=primaries, replicas=0
        )
        nodes: list[ClusterNode] | list[RedisServer] = redis_cluster.nodes
        url = redis_cluster.url
    else:
        single = RedisServer(logs, port=free_base(1), name="single")
        nodes, url = [single], single.url
    port = free_port()
    env = service_env(
        port,
        redis_url=url,
        redis_prefix=PREFIX,
        device_rate_per_s=0,
        dwell_s=DWELL_S,
        log_level="WARNING",
    )
    service = Process(f"service-p{primaries}", SERVE, env, logs)
    name = f"cluster, {primaries} primar{'y' if primaries == 1 else 'ies'}"
    try:
        if redis_cluster is not None:
            redis_cluster.start()
        else:
            single.start()
            single.wait_ready()
        service.start()
        yield Target(
            name if primaries else "single Redis", nodes, service, f"http://127.0.0.1:{port}"
        )
    finally:
        service.stop()
        for node in nodes:
            node.stop()


async def prepare(session: aiohttp.ClientSession, target: Target, devices: int) -> None:
    await wait_http(f"{target.url}/readyz", timeout_s=120)
    offer = {
        "title": "Hi",
        "body": "At {store_name}",
        "store_ids": [],
        "starts_at": 0,
        "ends_at": 4e9,
    }
    async with session.get(f"{target.url}/v1/stores", headers=ADMIN) as resp:
        offer["store_ids"] = [f["id"] for f in (await resp.json())["features"]]
    async with session.put(f"{target.url}/v1/offers/bench", json=offer, headers=ADMIN) as resp:
        if resp.status not in (200, 201):
            raise RuntimeError(await resp.text())
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        device_id = f"bench-{i:05d}"
        body = {"device_id": device_id, "consent": {"location": True, "offers": True}}
        async with gate, session.post(f"{target.url}/v1/devices", json=body, headers=SDK) as r:
            if r.status != 201:
                raise RuntimeError(await r.text())
            target.tokens[device_id] = (await r.json())["device_token"]

    await asyncio.gather(*(one(i) for i in range(devices)))


async def rep(
    session: aiohttp.ClientSession,
    target: Target,
    seconds: float,
    concurrency: int,
    points: Sequence[tuple[float, float]],
) -> None:
    primaries = target.primaries
    service_pid = target.service.pid
    before = (cpu_s(service_pid), [cpu_s(n.pid) for n in primaries], all_commands(primaries))
    ids = sorted(target.tokens)
    served = 0
    started = time.monotonic()
    end = started + seconds

    async def client(c: int) -> None:
        nonlocal served
        own = ids[c::concurrency]
        k = 0
        while time.monotonic() < end:
            device_id = own[k % len(own)]
            k += 1
            lat, lng = points[hash(device_id) % len(points)]
            body = {
                "device_id": device_id,
                "lat": lat,
                "lon": lng,
                "accuracy_m": 5,
                "ts": round(time.time(), 3),
            }
            headers = {"Authorization": f"Bearer {target.tokens[device_id]}"}
            async with session.post(f"{target.url}/v1/pings", json=body, headers=headers) as r:
                await r.read()
                served += r.status == 200

    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed = time.monotonic() - started
    service_cpu = cpu_s(service_pid) - before[0]
    redis_cpu = [cpu_s(n.pid) - b for n, b in zip(primaries, before[1], strict=True)]
    calls, evalsha = (a - b for a, b in zip(all_commands(primaries), before[2], strict=True))
    pings = max(served, 1)
    target.rows.append(
        {
            "pings/s": served / elapsed,
            "service CPU us/ping": service_cpu / pings * 1e6,
            "Redis CPU us/ping (all primaries)": sum(redis_cpu) / pings * 1e6,
            "busiest primary, share of a core": max(redis_cpu) / elapsed,
            "Redis commands/ping (scripts' own included)": calls / pings,
            "of which EVALSHA/ping": evalsha / pings,
            "load average (1 min)": os.getloadavg()[0],
        }
    )


def idle_commands(targets: Sequence[Target], seconds: float = 5.0) -> str:
    """Commands a second each Redis runs with no ping coming: its service's dispatcher
    looking at the outbox shards (and the catalogue poll)."""
    before = [all_commands(t.primaries)[0] for t in targets]
    time.sleep(seconds)
    after = [all_commands(t.primaries)[0] for t in targets]
    rates = [
        f"{t.name} {(a - b) / seconds:.0f}" for t, a, b in zip(targets, after, before, strict=True)
    ]
    return f"idle, Redis commands/s (one service each): {', '.join(rates)}"


def memory_per_device(target: Target, sample: int = 100) -> str:
    """On the single Redis: the bytes of a device's own keys (``MEMORY USAGE``, summed
    over the keys under its stem, for a sample of the devices after the run), and the
    server's whole ``used_memory`` over the devices (catalogue, outboxes and the
    server's own overhead included)."""
    keys = Keys(PREFIX)
    [node] = target.primaries
    own = []
    with node.client() as client:
        for device_id in sorted(target.tokens)[:sample]:
            stem = keys.device(device_ref(device_id, ID_SECRET.encode()))
            found = list(client.scan_iter(match=stem + ":*", count=1000))
            own.append(sum(int(client.memory_usage(k) or 0) for k in found))
        used = int(client.info("memory")["used_memory"])
    return (
        f"memory per device (single Redis, {len(target.tokens)} devices): own keys"
        f" median {statistics.median(own):.0f} B (min {min(own)}, max {max(own)});"
        f" used_memory / devices {used / len(target.tokens):.0f} B"
    )


def table(targets: Sequence[Target]) -> list[str]:
    names = list(targets[0].rows[0])
    lines = ["| | " + " | ".join(t.name for t in targets) + " |", "|---|" + "---|" * len(targets)]
    for name in names:
        cells = []
        for t in targets:
            values = [row[name] for row in t.rows]
            cells.append(f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


async def main_async(args: argparse.Namespace) -> list[str]:
    points = store_points()
    with tempfile.TemporaryDirectory(prefix="geofence-bench-cluster-") as tmp:
        logs = Path(tmp)
        with deployed(logs, 0) as single, deployed(logs, 1) as one, deployed(logs, 3) as three:
            targets = [single, one, three]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                for t in targets:
                    await prepare(session, t, args.devices)
                idle = idle_commands(targets)
                for t in targets:  # warm-up past the dwell: every device entered its store
                    await rep(session, t, WARM_UP_S, args.concurrency, points)
                    t.rows.clear()
                await asyncio.sleep(3)  # the notifications pushed
                for _ in range(args.reps):
                    for t in targets:
                        await rep(session, t, args.seconds, args.concurrency, points)
            memory = memory_per_device(single)
    return [*table(targets), "", idle, memory]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(
        f"cores={os.cpu_count()} load before={os.getloadavg()[0]:.2f}"
        f" reps={args.reps} x {args.seconds:g} s, {args.devices} devices,"
        f" {args.concurrency} clients"
    )
    print("\n".join(asyncio.run(main_async(args))))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""The real service over HTTP with Redis state: batch ingest, single pings, CPU and memory.

    python -m benchmarks.http [--devices 2000] [--duration 10] [--reps 3] [--workers 2]

One ``geofence serve`` process pinned to core 0; its own ``redis-server`` and the load
generators share core 1. The catalogue is the workload's 10k fences, loaded at start from
a generated GEOFENCE_STORES file; the workload's devices and the walking devices are
registered through ``POST /v1/devices``; three offers target the stores (one of them
every store, on every entry), so entries make notifications (written to the service's
stdout, which goes to a log file).

- batch ingest: a loader process posts the workload's batches to ``POST /v1/pings/batch``
  with the ingest key, two requests in flight, in upload order, the timestamps shifted so
  that the last ping is a few seconds old: wall-clock pings/s, and the CPU each process
  spent per ping (service, Redis, loader, from /proc and ``INFO cpu``).
- single pings: devices walking real tracks among the stores (``benchmarks.walks``); wrk
  posts ``POST /v1/pings``, each request the next position of the next device, with that
  device's token and ts (benchmarks/walk.lua; an aiohttp loader when wrk is missing).
  A warm-up run first, then rounds of the pings and of the ceiling, ``GET /healthz`` of
  the same service (the app, its middlewares, no work), in turns: wall-clock req/s of
  both, their ratio round by round, latency, CPU per request of each process, and the
  entries, exits and notifications the answers carried.
- single pings with workers (``GEOFENCE_WORKERS=2``): the same walks to a service of two
  processes sharing the port and free to run on both cores, which Redis and the load
  generator share with them: what this 2-core machine answers, not one core.

Every run records the machine's load meanwhile (``benchmarks.machine``). The per-device
and per-ingest-key rate limits are switched off (one wrk connection pings many devices
many times a second) and the device cap raised; the settings changed are listed in the
output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any, TypeVar

import aiohttp
import msgspec
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import machine
from benchmarks import walks as wk
from benchmarks import workload as wl
from geofence.config import Settings
from tools.processes import (
    ROOT,
    SERVE,
    Process,
    RedisServer,
    all_listening,
    children,
    free_port,
    rss_kib,
    running,
    service_env,
    wait_http,
)

SERVICE_CORE = "0"
LOAD_CORE = "1"  # the loaders and Redis: the service has core 0 to itself
FENCES = 10_000
WORKLOAD_S = 3_600.0
BATCH_CONNECTIONS = 2
WORKERS = 2  # the run with GEOFENCE_WORKERS: one worker a core
LAST_PING_AGO_S = 5.0
MAX_REPLAY_S = 22 * 3_600.0  # pings more than 24 h old are refused
FALLBACK_MAX_RATE = 5_000  # single pings prepared per second of run for the aiohttp loader
WALKERS = 500  # devices walking for the single pings, apart from the batch's devices
WALK_RATE_BOUND = 15_000  # req/s the walks are long enough for, over every run planned
CONNECTIONS = 50
OFFER_TAG = "bench"
DEVICE_CAP = 100  # notifications a device may get in 48 h (the default, 2, would soon
# leave the walking devices with none, and the single-ping runs with no offer to decide)


@dataclass(frozen=True)
class BenchOffer:
    offer_id: str
    tag: str
    every: int  # one store in so many has the tag
    fields: dict[str, Any]  # the offer's other fields


OFFERS = (
    # at every store, on each entry (with a device cap of DEVICE_CAP)
    BenchOffer(
        "bench-welcome", OFFER_TAG, 1, {"per_device_limit": 100, "per_device_cooldown_s": 0}
    ),
    BenchOffer("bench-lunch", "bench-lunch", 3, {"priority": 5}),  # once a device, a day
    BenchOffer("bench-opening", "bench-opening", 7, {"priority": 3, "budget": 2_000}),
)
REGISTER_CONCURRENCY = 16
READY_TIMEOUT_S = 180.0
WALK_TEMPLATE = Path(__file__).with_name("walk.lua")
LOADER = [
    sys.executable,
    "-c",
    "import sys; from benchmarks.http import loader_main; loader_main(sys.argv[1:])",
]
MiB = 1024 * 1024
T = TypeVar("T")


@dataclass
class Stack:
    """A running redis-server and ``geofence serve``, with the workload's devices registered."""

    dir: Path
    url: str
    redis: RedisServer
    service: Process
    env: dict[str, str]
    settings: dict[str, str]  # what the benchmark changed, and the limits it left alone
    tokens: dict[str, str] = field(default_factory=dict)
    cores: str = SERVICE_CORE  # where the service runs: a core, or a comma list of them
    load_cores: str = LOAD_CORE  # where the load generators run
    walkers: list[str] = field(default_factory=list)
    walks: wk.Walks | None = None
    walks_file: Path | None = None
    sent: int = 0  # single pings of the walks sent so far: the next one is the walks' next

    def key(self, kind: str) -> str:
        return self.env[f"GEOFENCE_{kind.upper()}_KEYS"].split(",")[0]


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", core, *argv]


@contextlib.contextmanager
def stack(
    workload: wl.Workload, serve: Sequence[str] = SERVE, walk_pings: int = 0
) -> Iterator[Stack]:
    """Redis, the service and the registered devices; everything stopped and removed after.
    ``serve``: the command that runs the service; ``walk_pings``: so many pings for each
    of :data:`WALKERS` devices walking among the stores (none if 0)."""
    with tempfile.TemporaryDirectory(prefix="geofence-http-") as tmp:
        work = Path(tmp)
        server = RedisServer(work, durable=False)
        server.argv = pinned(LOAD_CORE, server.argv)
        port = free_port()
        changed = benchmark_settings(workload)
        stores = write_stores(workload, work)
        # logging at WARNING: a log line per request must not be what is measured
        env = service_env(port, redis_url=server.url, stores=stores, log_level="WARNING", **changed)
        service = Process("service", pinned(SERVICE_CORE, serve), env, work)
        with running(service, server):
            server.start()
            server.wait_ready()
            service.start()
            url = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_ready(service, url))
            s = Stack(work, url, server, service, env, _described(changed))
            s.walkers = walker_ids(WALKERS if walk_pings else 0)
            s.tokens = asyncio.run(_prepare(s, [*workload.device_ids, *s.walkers]))
            if walk_pings:
                s.walks = wk.make(workload.fences, WALKERS, walk_pings, time.time())
                s.walks_file = write_walks(s, s.walks, s.walkers)
            yield s


def benchmark_settings(workload: wl.Workload) -> dict[str, str]:
    """The settings changed for the benchmark, among those this version of the service has."""
    span_s = float(workload.pings.ts.max() - workload.pings.ts.min())
    wanted = {
        "device_rate_per_s": "0",  # no limit: wrk pings every device many times a second
        "ingest_rate_per_s": "0",
        "quiet_hours": "off",
        # the workload replays an hour, the walks up to a few: their first entries must
        # still get offers (a ping more than 24 h old is refused anyway)
        "notify_max_lag_s": str(max(math.ceil(span_s) + 3_600, 86_400)),
        "device_cap": str(DEVICE_CAP),
    }
    names = {f.name for f in dataclasses.fields(Settings)}
    return {name: value for name, value in wanted.items() if name in names}


def _described(changed: dict[str, str]) -> dict[str, str]:
    left = {"max_inflight", "device_burst", "ingest_burst"} - set(changed)
    defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.name in left}
    return {
        **{
            name: f"{value} (0: no limit)" if name.endswith("_rate_per_s") else value
            for name, value in changed.items()
        },
        **{name: f"{value} (default)" for name, value in sorted(defaults.items())},
    }


def write_stores(workload: wl.Workload, work: Path) -> Path:
    """The workload's fences as a FeatureCollection, each tagged for the benchmark's offer."""
    features = []
    for n, fence in enumerate(workload.fences):
        feature = fence.to_feature()
        properties = dict(feature.get("properties") or {})
        tags = [o.tag for o in OFFERS if n % o.every == 0]
        properties["tags"] = [*properties.get("tags", []), *tags]
        features.append({**feature, "properties": properties})
    path = work / "stores.geojson"
    path.write_bytes(msgspec.json.encode({"type": "FeatureCollection", "features": features}))
    return path


async def _wait_ready(service: Process, url: str) -> None:
    """Until /readyz answers 200 (the catalogue is built), or the service exits."""
    ready = asyncio.create_task(wait_http(f"{url}/readyz", timeout_s=READY_TIMEOUT_S))
    while not ready.done():
        if not service.alive():
            ready.cancel()
            raise RuntimeError(f"geofence serve exited:\n{service.log()[-2000:]}")
        await asyncio.wait({ready}, timeout=0.2)
    ready.result()


async def _prepare(s: Stack, device_ids: Sequence[str]) -> dict[str, str]:
    """The offer, and every device through ``POST /v1/devices``: their tokens by device id."""
    async with aiohttp.ClientSession(base_url=s.url) as session:
        for o in OFFERS:
            offer = _offer(o.tag, o.fields)
            await _call(session, "PUT", f"/v1/offers/{o.offer_id}", s.key("admin"), offer, 201)
        gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(n: int, device_id: str) -> tuple[str, str]:
            body = {
                "device_id": device_id,
                "consent": {"location": True, "offers": True},
                "push_token": f"push-{n}",
            }
            async with gate:
                answer = await _call(session, "POST", "/v1/devices", s.key("sdk"), body, 201)
            return device_id, str(answer["device_token"])

        pairs = await asyncio.gather(*(register(n, d) for n, d in enumerate(device_ids)))
    return dict(pairs)


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, key: str, body: Any, status: int
) -> Any:
    async with session.request(method, path, json=body, headers=_bearer(key)) as resp:
        if resp.status != status:
            raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
        return await resp.json()


def _offer(tag: str, fields: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    return {
        "title": "Welcome in",
        "body": "10% off today at {store_name}",
        "store_tags": [tag],
        "starts_at": _rfc3339(now - 7 * 86_400),
        "ends_at": _rfc3339(now + 86_400),
        **fields,
    }


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# what the service spends


def cpu_s(pid: int) -> float:
    """utime + stime of a process so far, in seconds (/proc/<pid>/stat, Linux)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def redis_used_mib(server: RedisServer) -> float:
    with server.client() as client:
        info: dict[str, Any] = client.info("memory")
    return float(info["used_memory"]) / MiB


def scrape(url: str) -> Counter[str]:
    """Pings screened by status, notifications made and CAS retries, from /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "geofence_pings_total":
                out[sample.labels["status"]] += int(sample.value)
            elif sample.name == "geofence_visit_events_total":
                out[sample.labels["type"]] += int(sample.value)
            elif sample.name == "geofence_notifications_total":
                out["notifications"] += int(sample.value)
            elif sample.name == "geofence_state_conflicts_total":
                out["state_conflicts"] += int(sample.value)
    return out


def redis_cpu_s(server: RedisServer) -> float:
    with server.client() as client:
        info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def core_ticks(cores: str) -> tuple[int, int]:
    """Busy and total ticks of some cores so far (/proc/stat), whatever ran on them."""
    wanted = {f"cpu{core}" for core in cores.split(",")}
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name in wanted:
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            busy, total = busy + sum(ticks) - ticks[3] - ticks[4], total + sum(ticks)
            wanted.remove(name)
    if wanted:
        raise RuntimeError(f"no {', '.join(sorted(wanted))} in /proc/stat")
    return busy, total


def service_cpu_s(pid: int) -> float:
    """:func:`cpu_s` of the service and of its workers, if it forked any."""
    return cpu_s(pid) + sum(cpu_s(worker) for worker in children(pid))


@dataclass(frozen=True)
class Usage:
    """What one run cost the service and Redis, the machine meanwhile, and the metrics
    it moved."""

    wall_s: float
    service_cpu_s: float
    redis_cpu_s: float
    core_busy: float  # the service's cores: busy with anything (other processes too)
    moved: Counter[str]
    load: machine.Load

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "service_cpu_s": self.service_cpu_s,
            "redis_cpu_s": self.redis_cpu_s,
            # far above service_share: something else ran on the service's core
            "service_core_busy": self.core_busy,
            "service_share": self.service_cpu_s / self.wall_s,
            **self.load.as_dict(),
        }

    def per_request(self, count: int) -> dict[str, Any]:
        """:meth:`as_dict` and the µs of CPU each process spent per request (or ping)."""
        return {
            **self.as_dict(),
            "service_us": self.service_cpu_s / count * 1e6 if count else math.nan,
            "redis_us": self.redis_cpu_s / count * 1e6 if count else math.nan,
            "loader_us": self.load.loader_s / count * 1e6 if count else math.nan,
        }


def under_load(s: Stack, run: Callable[[], T]) -> tuple[T, Usage]:
    """``run()``'s result and what it cost. (With several workers, ``moved`` is what
    the worker that answered the scrapes saw: each keeps its own metrics.)"""
    pid = s.service.pid
    before = scrape(s.url)
    cpu, redis_cpu, cores = service_cpu_s(pid), redis_cpu_s(s.redis), core_ticks(s.cores)
    snapshot = machine.snapshot()
    started = time.perf_counter()
    out = run()
    wall_s = time.perf_counter() - started
    busy, total = (b - a for a, b in zip(cores, core_ticks(s.cores), strict=True))
    spent = service_cpu_s(pid) - cpu
    spent_redis = redis_cpu_s(s.redis) - redis_cpu
    usage = Usage(
        wall_s=wall_s,
        service_cpu_s=spent,
        redis_cpu_s=spent_redis,
        core_busy=busy / total if total else math.nan,
        moved=scrape(s.url) - before,
        load=machine.since(snapshot, spent + spent_redis),
    )
    return out, usage


# batch ingest


def batch_bodies(workload: wl.Workload, shift_s: float) -> list[bytes]:
    """``{"pings": [...]}`` of every batch in upload order, ts moved by ``shift_s``."""
    p = workload.pings
    ids = [workload.device_ids[d] for d in p.device.tolist()]
    lat, lng = np.round(p.lat, 6).tolist(), np.round(p.lng, 6).tolist()
    accuracy, ts = np.round(p.accuracy_m, 1).tolist(), np.round(p.ts + shift_s, 3).tolist()
    bodies = []
    for batch in p.batches():
        rows = [r for start, end in batch for r in range(start, end)]
        pings = [
            {
                "device_id": ids[r],
                "lat": lat[r],
                "lon": lng[r],
                "accuracy_m": accuracy[r],
                "ts": ts[r],
            }
            for r in rows
        ]
        bodies.append(msgspec.json.encode({"pings": pings}))
    return bodies


def run_batch(
    s: Stack,
    workload: wl.Workload,
    duration_s: float,
    laps: Sequence[float] = (),
    connections: int = BATCH_CONNECTIONS,
) -> dict[str, Any]:
    """The workload's batches, posted ``connections`` at a time until done or
    ``duration_s``; ``laps``: the workload once for each time given, in turn, its last
    ping then (default: once, just now)."""
    ends = list(laps) or [time.time() - LAST_PING_AGO_S]
    last = float(workload.pings.ts.max())
    requests = [
        (s.key("ingest"), body) for end in ends for body in batch_bodies(workload, end - last)
    ]
    load, usage = under_load(
        s, lambda: run_loader(s, "/v1/pings/batch", requests, connections, duration_s)
    )
    pings = int(load["pings"])
    return {
        "connections": connections,
        **usage.per_request(pings),
        **{k: load[k] for k in ("requests", "wall_s", "http", "results", "p50_ms", "p99_ms")},
        "pings": pings,
        "pings_per_s": pings / load["wall_s"],
        "pings_per_cpu_s": pings / usage.service_cpu_s if usage.service_cpu_s else math.nan,
        "notifications": usage.moved["notifications"],
        "state_conflicts": usage.moved["state_conflicts"],
    }


def lap_span(workload: wl.Workload) -> float:
    """Seconds of ts one replay of the workload takes, a minute's gap included."""
    return float(workload.pings.ts.max() - workload.pings.ts.min()) + 60.0


def lap_ends(workload: wl.Workload, laps: int) -> list[float]:
    """When each of ``laps`` replays of the workload ends, one after the other (a minute
    apart), the last a few seconds ago: each device's pings go on in ts order, lap after
    lap (a device's first ping of a lap is a relocation, flagged as a jump)."""
    span = lap_span(workload)
    if laps * span > MAX_REPLAY_S:
        raise ValueError(f"{laps} laps of {span:.0f} s reach back more than a day")
    now = time.time() - LAST_PING_AGO_S
    return [now - (laps - 1 - n) * span for n in range(laps)]


def run_loader(
    s: Stack,
    path: str,
    requests: Iterable[tuple[str, bytes]],
    connections: int,
    duration_s: float,
) -> dict[str, Any]:
    """The aiohttp loader in a process of its own on the load core; its report."""
    file = s.dir / "requests.tsv"
    with file.open("wb") as out:
        for token, body in requests:
            out.write(token.encode() + b"\t" + body + b"\n")
    argv = [*LOADER, str(file), s.url + path, str(connections), str(duration_s)]
    done = subprocess.run(
        pinned(s.load_cores, argv),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=duration_s + 120,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# single pings: devices walking (benchmarks/walks.py)


def walker_ids(count: int) -> list[str]:
    return [f"walk-{i:06d}" for i in range(count)]


def write_walks(s: Stack, walks: wk.Walks, ids: Sequence[str]) -> Path:
    """The walks as walk.lua reads them, one line a device."""
    path = s.dir / "walks.tsv"
    every = walks.ts[:, 1] - walks.ts[:, 0]
    with path.open("w") as out:
        for n, device_id in enumerate(ids):
            points = np.column_stack(
                (np.round(walks.lat[n], 6), np.round(walks.lng[n], 6), walks.accuracy_m[n])
            )
            values = ",".join(f"{v:g}" for v in points.ravel().tolist())
            head = f"{device_id}\tBearer {s.tokens[device_id]}\t{walks.ts[n, 0]:.3f}"
            out.write(f"{head}\t{every[n]:.6f}\t{values}\n")
    return path


def walk_requests(s: Stack, count: int) -> Iterator[tuple[str, bytes]]:
    """What walk.lua sends next, for the aiohttp loader (when wrk is missing)."""
    walks, ids = s.walks, s.walkers
    if walks is None:
        raise RuntimeError("the stack has no walks")
    for sent in range(s.sent, s.sent + count):
        d, k = sent % walks.devices, sent // walks.devices
        n = min(k, walks.pings - 1)
        every = walks.ts[d, 1] - walks.ts[d, 0]
        ping = {
            "device_id": ids[d],
            "lat": round(float(walks.lat[d, n]), 6),
            "lon": round(float(walks.lng[d, n]), 6),
            "accuracy_m": float(walks.accuracy_m[d, n]),
            "ts": round(float(walks.ts[d, 0] + k * every), 3),
        }
        yield s.tokens[ids[d]], msgspec.json.encode(ping)


def run_walk(s: Stack, connections: int, duration_s: float) -> dict[str, Any]:
    """Single pings of the walking devices: wrk (or the aiohttp loader), each request the
    next position of the next device; the stack's cursor moves past what was sent."""
    if s.walks is None or s.walks_file is None:
        raise RuntimeError("the stack has no walks")
    if shutil.which("wrk"):
        text = Template(WALK_TEMPLATE.read_text()).substitute(data=s.walks_file, start=s.sent)
        script = s.dir / "walk.lua"
        script.write_text(text)
        result = run_wrk(s, script, connections, duration_s)
        exhausted = result.pop("exhausted")
        s.sent = result.pop("sent")
        return {**result, "exhausted": exhausted}
    count = int(duration_s * FALLBACK_MAX_RATE)
    load = run_loader(s, "/v1/pings", walk_requests(s, count), connections, duration_s)
    s.sent += load["requests"]
    non_2xx = sum(n for status, n in load["http"].items() if not status.startswith("2"))
    return {
        "requests": load["requests"],
        "rps": load["requests"] / load["wall_s"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "non_2xx": non_2xx,
        "socket_errors": 0,
        "accepted": load["results"].get("accepted", 0),
        "exhausted": max(0, s.sent - s.walks.devices * s.walks.pings),
        **dict.fromkeys(("entries", "exits", "notifications"), -1),
    }


def run_wrk(
    s: Stack, script: Path | None, connections: int, duration_s: float, path: str = "/v1/pings"
) -> dict[str, Any]:
    seconds = max(1, math.ceil(duration_s))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += [] if script is None else ["-s", str(script)]
    done = subprocess.run(
        pinned(s.load_cores, [*argv, f"{s.url}{path}"]),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return parse_wrk(done.stdout)


WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, req/s, p50 and p99 (ms), non-2xx and socket errors from wrk's report, and
    what walk.lua counted (-1 where the script did not count)."""

    def number(pattern: str, default: float | None = None) -> float:
        found = re.search(pattern, out)
        if found is None:
            if default is None:
                raise RuntimeError(f"no {pattern!r} in wrk's output:\n{out}")
            return default
        return float(found.group(1))

    def latency_ms(percent: int) -> float:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no {percent}% latency in wrk's output:\n{out}")
        return float(found.group(1)) * WRK_UNITS_MS[found.group(2)]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(number(r"(\d+) requests in")),
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": latency_ms(50),
        "p99_ms": latency_ms(99),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)", 0)),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        **{
            name: int(number(rf"(?m)^{name}: (\d+)", -1))
            for name in ("accepted", "sent", "exhausted", "entries", "exits", "notifications")
        },
    }


def run_pings(s: Stack, connections: int, duration_s: float) -> dict[str, Any]:
    """One run of the walks' single pings, with what it cost and what it moved."""
    result, usage = under_load(s, lambda: run_walk(s, connections, duration_s))
    moved = usage.moved  # with several workers: only the one that answered the scrapes
    counted = result["entries"] >= 0  # by walk.lua in every answer, else by the metrics
    made = {k: result[k] if counted else moved[k] for k in ("entries", "exits", "notifications")}
    return {
        "connections": connections,
        **result,
        **made,
        **usage.per_request(result["requests"]),
        "events_per_s": (made["entries"] + made["exits"]) / usage.wall_s,
        "notifications_per_s": made["notifications"] / usage.wall_s,
        "results": {k: moved[k] for k in ("accepted", "flagged", "ignored") if moved[k]},
    }


def run_ceiling(s: Stack, connections: int, duration_s: float) -> dict[str, Any] | None:
    """``GET /healthz`` with wrk: the same process, middlewares, core and load generator
    answering with no work at all, no Redis, no body to parse. No ping route can be
    faster than this."""
    if not shutil.which("wrk"):
        return None
    result, usage = under_load(s, lambda: run_wrk(s, None, connections, duration_s, "/healthz"))
    return {"connections": connections, **result, **usage.per_request(result["requests"])}


def run_interleaved(
    s: Stack, connections: int, duration_s: float, reps: int
) -> list[dict[str, Any]]:
    """``reps`` rounds of the walks' pings and the ``/healthz`` ceiling, in turns (the
    order flips every round, so a slow spell of the machine falls on both alike)."""
    rounds = []
    for rep in range(reps):
        first, second = ("pings", "ceiling") if rep % 2 == 0 else ("ceiling", "pings")
        runs = {}
        for name in (first, second):
            run = run_pings if name == "pings" else run_ceiling
            runs[name] = run(s, connections, duration_s)
        rounds.append(runs)
    return rounds


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of each figure over the rounds, and the ratio of each round's
    pings to its own ceiling (both wall-clock requests a second, same core, same wrk)."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    pings = [r["pings"] for r in rounds]
    out: dict[str, Any] = {
        name: spread([p[name] for p in pings])
        for name in (
            "rps",
            "p50_ms",
            "p99_ms",
            "service_us",
            "redis_us",
            "events_per_s",
            "notifications_per_s",
        )
    }
    ceilings = [r["ceiling"] for r in rounds if r.get("ceiling")]
    if ceilings:
        out["ceiling_rps"] = spread([c["rps"] for c in ceilings])
        out["ceiling_p99_ms"] = spread([c["p99_ms"] for c in ceilings])
        out["ceiling_service_us"] = spread([c["service_us"] for c in ceilings])
        out["of_ceiling"] = spread([r["pings"]["rps"] / r["ceiling"]["rps"] for r in rounds])
    return out


@contextlib.contextmanager
def with_workers(s: Stack, workers: int) -> Iterator[Stack]:
    """The stack with ``geofence serve`` of ``workers`` processes sharing the port, free to
    run on every core (where Redis and the load run too): the stack's service is stopped
    and this one runs on its Redis, devices and offers. The stack's walk cursor follows."""
    s.service.stop()
    port = free_port()
    env = {**s.env, "GEOFENCE_PORT": str(port), "GEOFENCE_WORKERS": str(workers)}
    cores = ",".join(str(n) for n in range(os.cpu_count() or 1))
    service = Process(f"service-{workers}-workers", pinned(cores, SERVE), env, s.dir)
    with running(service):
        service.start()
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_ready(service, url))
        # a load generator's connections are made once, at its start: every worker must
        # take its share
        asyncio.run(all_listening(service, port, workers))
        shared = dataclasses.replace(s, url=url, service=service, cores=cores, load_cores=cores)
        try:
            yield shared
        finally:
            s.sent = shared.sent


def run_workers(s: Stack, workers: int, connections: int, duration_s: float) -> dict[str, Any]:
    """The walks' single pings at ``connections`` to the service of ``workers`` processes
    (:func:`with_workers`)."""
    with with_workers(s, workers) as shared:
        run = run_pings(shared, connections, duration_s)
    return {**run, "workers": workers, "cores": shared.cores}


# the whole measurement


def walk_length(duration_s: float, runs: int) -> int:
    """Pings for each walking device, enough for ``runs`` runs at up to
    :data:`WALK_RATE_BOUND` requests a second."""
    return math.ceil(WALK_RATE_BOUND * duration_s * runs / WALKERS) + 2


def measure(
    workload: wl.Workload,
    *,
    duration_s: float = 10.0,
    reps: int = 3,
    connections: int = CONNECTIONS,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """On one fresh stack: batch ingest; ``reps`` rounds of the walks' single pings and
    the ``/healthz`` ceiling in turns; memory; then the walks' pings to ``workers``
    processes on every core (none if ``workers`` is 0)."""
    runs = 1 + reps + (1 if workers else 0)
    with stack(workload, walk_pings=walk_length(duration_s, runs)) as s:
        batch = run_batch(s, workload, duration_s)
        # the walks from their start: visits open before the rounds, whose rates are
        # then those of devices already on their way
        warm_up = run_pings(s, connections, duration_s)
        rounds = run_interleaved(s, connections, duration_s, reps)
        rss_mib = rss_kib(s.service.pid) / 1024
        redis_rss_mib = rss_kib(s.redis.pid) / 1024
        used_mib = redis_used_mib(s.redis)
        many = run_workers(s, workers, connections, duration_s) if workers else None
        return {
            "warm_up": warm_up,
            "rounds": rounds,
            "summary": summarize(rounds),
            "workers": many,
            "single_loader": "wrk" if shutil.which("wrk") else "aiohttp",
            "settings": s.settings,
            "fences": len(workload.fences),
            "devices": len(workload.device_ids),
            "walkers": WALKERS,
            "walk_pings": s.walks.pings if s.walks else 0,
            "workload_pings": len(workload.pings),
            "duration_s": duration_s,
            "connections": connections,
            "batch": batch,
            "service_rss_mib": rss_mib,
            "redis_rss_mib": redis_rss_mib,
            "redis_used_memory_mib": used_mib,
        }


# the loader process


@dataclass
class Tally:
    http: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def add(self, status: int, answer: bytes, latency_s: float) -> None:
        self.http[str(status)] += 1
        self.latencies_s.append(latency_s)
        if status == 200:
            self.results.update(result_statuses(answer))

    def report(self, wall_s: float) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s or [math.nan]) * 1e3
        return {
            "requests": len(self.latencies_s),
            "pings": sum(self.results.values()),
            "wall_s": wall_s,
            "http": dict(self.http),
            "results": dict(self.results),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }


class _Status(msgspec.Struct):
    status: str


class _Answer(msgspec.Struct):
    status: str | None = None  # one ping
    results: list[_Status] = []  # a batch


def result_statuses(answer: bytes) -> list[str]:
    decoded = msgspec.json.decode(answer, type=_Answer)
    if decoded.status is not None:
        return [decoded.status]
    return [r.status for r in decoded.results]


def read_requests(file: Path) -> list[tuple[str, bytes]]:
    out = []
    with file.open("rb") as lines:
        for line in lines:
            token, _, body = line.rstrip(b"\n").partition(b"\t")
            out.append((token.decode(), body))
    return out


async def load(
    requests: Iterable[tuple[str, bytes]], url: str, connections: int, duration_s: float
) -> dict[str, Any]:
    """Posts ``requests`` in order, ``connections`` at a time, until done or ``duration_s``."""
    queue = iter(requests)
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration_s
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(
            *(_send(session, url, queue, deadline, tally) for _ in range(connections))
        )
    return tally.report(time.perf_counter() - started)


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    queue: Iterator[tuple[str, bytes]],
    deadline: float,
    tally: Tally,
) -> None:
    for token, body in queue:
        sent = time.perf_counter()
        if sent > deadline:
            return
        headers = {**_bearer(token), "Content-Type": "application/json"}
        async with session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
        tally.add(resp.status, answer, time.perf_counter() - sent)


def loader_main(argv: Sequence[str]) -> None:
    """``FILE URL CONNECTIONS SECONDS``: the report as JSON on stdout."""
    file, url, connections, seconds = argv
    requests = read_requests(Path(file))
    report = asyncio.run(load(requests, url, int(connections), float(seconds)))
    sys.stdout.write(json.dumps(report) + "\n")


# the command line


def table(r: dict[str, Any]) -> str:
    """The HTTP section's body: the setup, the batch run, the single-ping rounds and
    their summary, the two-worker run, memory."""
    lines = [
        (
            f"{r['fences']:,} fences; batch: {r['devices']:,} devices, {r['workload_pings']:,} "
            f"pings; single pings: {r['walkers']:,} devices walking, up to {r['walk_pings']:,} "
            f"pings each; runs of {r['duration_s']:g} s; service on core {SERVICE_CORE}, Redis "
            f"and the load generator on core {LOAD_CORE}"
        ),
        "settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
        "",
        batch_line(r["batch"]),
        "",
        single_table(r),
        "",
        summary_line(r["summary"]),
    ]
    if r["workers"] is not None:
        lines += ["", workers_line(r["workers"])]
    lines += [
        "",
        (
            f"RSS after the runs: service {r['service_rss_mib']:.0f} MiB, Redis "
            f"{r['redis_rss_mib']:.0f} MiB (used_memory {r['redis_used_memory_mib']:.0f} MiB)"
        ),
    ]
    return "\n".join(lines)


def batch_line(b: dict[str, Any]) -> str:
    return (
        f"batch ingest, {b['connections']} requests of up to 1,000 pings in flight: "
        f"{b['pings']:,} pings in {b['wall_s']:.1f} s: {b['pings_per_s']:,.0f} pings/s wall "
        f"clock; CPU per ping: service {b['service_us']:.1f} µs, Redis {b['redis_us']:.1f} µs, "
        f"loader {b['loader_us']:.1f} µs; request p99 {b['p99_ms']:.0f} ms; "
        f"notifications {b['notifications']:,}; {machine.describe(b)}"
    )


def single_table(r: dict[str, Any]) -> str:
    """One row a run, in the order they ran."""
    lines = [
        (
            f"single pings ({r['single_loader']}, {r['connections']} connections), each round "
            "the walks' pings and the `GET /healthz` ceiling in turns, after a warm-up:"
        ),
        "",
        (
            "| round | route | req/s | p50 ms | p99 ms | service µs/req | Redis µs/req "
            "| wrk µs/req | events/s | notifications/s | errors | machine |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rounds = [("warm-up", {"pings": r["warm_up"]}), *enumerate(r["rounds"], 1)]
    for n, runs in rounds:
        for name, x in runs.items():
            if x is None:
                continue
            route = "POST /v1/pings" if name == "pings" else "GET /healthz"
            events = f"{x['events_per_s']:,.0f}" if name == "pings" else "—"
            notes = f"{x['notifications_per_s']:,.1f}" if name == "pings" else "—"
            lines.append(
                f"| {n} | {route} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} "
                f"| {x['service_us']:.0f} | {x['redis_us']:.0f} | {x['loader_us']:.0f} "
                f"| {events} | {notes} | {x['non_2xx'] + x['socket_errors']} "
                f"| {machine.describe(x)} |"
            )
    return "\n".join(lines)


def _spread(v: dict[str, float], fmt: str) -> str:
    return f"{v['median']:{fmt}} ({v['min']:{fmt}} to {v['max']:{fmt}})"


def summary_line(m: dict[str, Any]) -> str:
    """Medians over the rounds, each with its range."""
    text = (
        f"median of the rounds (range): pings {_spread(m['rps'], ',.0f')} req/s, p99 "
        f"{_spread(m['p99_ms'], '.1f')} ms, service CPU {_spread(m['service_us'], '.0f')} µs "
        f"and Redis CPU {_spread(m['redis_us'], '.0f')} µs a request, "
        f"{_spread(m['events_per_s'], ',.0f')} entries+exits/s and "
        f"{_spread(m['notifications_per_s'], ',.1f')} notifications/s"
    )
    if "of_ceiling" in m:
        text += (
            f"; the ceiling {_spread(m['ceiling_rps'], ',.0f')} req/s, p99 "
            f"{_spread(m['ceiling_p99_ms'], '.1f')} ms; pings / ceiling, each round's wall-clock "
            f"req/s on the same core with the same wrk: {_spread(m['of_ceiling'], '.0%')}"
        )
    return text


def workers_line(w: dict[str, Any]) -> str:
    return (
        f"{w['workers']} workers (GEOFENCE_WORKERS) on cores {w['cores']}, which Redis and wrk "
        f"share, at {w['connections']} connections: {w['rps']:,.0f} req/s, p50 "
        f"{w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms, {w['non_2xx'] + w['socket_errors']} "
        f"errors, {w['events_per_s']:,.0f} entries+exits/s, {w['notifications_per_s']:,.1f} "
        f"notifications/s; CPU per request: service {w['service_us']:.0f} µs, Redis "
        f"{w['redis_us']:.0f} µs, wrk {w['loader_us']:.0f} µs; {machine.describe(w)}"
    )


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"


def arguments(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The flags of a benchmark over HTTP: how many devices, how long each run."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--duration", type=float, default=10.0, help="most seconds of a run")
    parser.add_argument("--reps", type=int, default=3, help="rounds, each in turns")
    return parser


def workload_of(args: argparse.Namespace) -> wl.Workload:
    """The workload the flags of :func:`arguments` ask for."""
    return wl.make(fences=FENCES, devices=args.devices, duration_s=WORKLOAD_S)


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("python -m benchmarks.http", __doc__)
    parser.add_argument("--workers", type=int, default=WORKERS, help="0: no run with workers")
    args = parser.parse_args(argv)
    result = measure(
        workload_of(args), duration_s=args.duration, reps=args.reps, workers=args.workers
    )
    print(table(result))


if __name__ == "__main__":
    main()

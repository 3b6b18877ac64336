"""The real service over HTTP with Redis state: batch ingest, single pings, CPU and memory.

    python -m benchmarks.http [--devices 2000] [--duration 20]

One ``geofence serve`` process pinned to core 0; its own ``redis-server`` and the load
generators share core 1. The catalogue is the workload's 10k fences, loaded at start from
a generated GEOFENCE_STORES file; the workload's devices are registered through
``POST /v1/devices`` and one offer targets every store, so entries make notifications
(written to the service's stdout, which goes to a log file).

- batch ingest: a loader process posts the workload's batches to ``POST /v1/pings/batch``
  with the ingest key, two requests in flight, in upload order, the timestamps shifted so
  that the last ping is a few seconds old. Pings per CPU second of the service process
  (utime + stime from /proc) is "pings/s per core".
- the ceiling: wrk asks ``GET /healthz`` of the same service (the app, its middlewares,
  no work), which bounds what any ping route can answer on that core;
- single ping: wrk posts ``POST /v1/pings``, each request for the next device in turn with
  that device's token and a later ts than its last one (benchmarks/ping.lua); an aiohttp
  loader process when wrk is missing.
- single ping with two workers (``GEOFENCE_WORKERS=2``): the same, to a service of two
  processes sharing the port and free to run on both cores, which Redis and the load
  generator share with them: what this 2-core machine answers, not one core.

The per-device and per-ingest-key rate limits are switched off for the run (one wrk
connection pings many devices many times a second); the settings changed are listed in
the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import shutil
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
# single pings: each request's ts this much after the one before, so that the ts run no
# faster than the clock up to 5k req/s (beyond 5 minutes ahead a ping is refused as
# "future") and stay apart for a device (0.4 s between its pings with 2,000 devices)
TS_STEP_S = 0.0002
FALLBACK_MAX_RATE = 5_000  # single pings prepared per second of run for the aiohttp loader
OFFER_ID = "bench-welcome"
OFFER_TAG = "bench"
REGISTER_CONCURRENCY = 16
READY_TIMEOUT_S = 180.0
LUA_TEMPLATE = Path(__file__).with_name("ping.lua")
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
    next_ts: float = 0.0  # single pings: the next run's pings start at or after this ts

    def key(self, kind: str) -> str:
        return self.env[f"GEOFENCE_{kind.upper()}_KEYS"].split(",")[0]


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", core, *argv]


@contextlib.contextmanager
def stack(workload: wl.Workload, serve: Sequence[str] = SERVE) -> Iterator[Stack]:
    """Redis, the service and the registered devices; everything stopped and removed after.
    ``serve``: the command that runs the service."""
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
            s.tokens = asyncio.run(_prepare(s, workload.device_ids))
            yield s


def benchmark_settings(workload: wl.Workload) -> dict[str, str]:
    """The settings changed for the benchmark, among those this version of the service has."""
    span_s = float(workload.pings.ts.max() - workload.pings.ts.min())
    wanted = {
        "device_rate_per_s": "0",  # no limit: wrk pings every device many times a second
        "ingest_rate_per_s": "0",
        "quiet_hours": "off",
        # the workload replays an hour: its first entries must still get offers
        "notify_max_lag_s": str(math.ceil(span_s) + 3_600),
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
    for fence in workload.fences:
        feature = fence.to_feature()
        properties = dict(feature.get("properties") or {})
        properties["tags"] = [*properties.get("tags", []), OFFER_TAG]
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
        await _call(session, "PUT", f"/v1/offers/{OFFER_ID}", s.key("admin"), _offer(), 201)
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


def _offer() -> dict[str, Any]:
    now = time.time()
    return {
        "title": "Welcome in",
        "body": "10% off today at {store_name}",
        "store_tags": [OFFER_TAG],
        "starts_at": _rfc3339(now - 7 * 86_400),
        "ends_at": _rfc3339(now + 86_400),
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
    """What one run cost the service and Redis, and the metrics it moved."""

    wall_s: float
    service_cpu_s: float
    redis_cpu_s: float
    core_busy: float  # the service's cores: busy with anything (other processes too)
    moved: Counter[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "service_cpu_s": self.service_cpu_s,
            "redis_cpu_s": self.redis_cpu_s,
            # far above service_share: something else ran on the service's core
            "service_core_busy": self.core_busy,
            "service_share": self.service_cpu_s / self.wall_s,
        }


def under_load(s: Stack, run: Callable[[], T]) -> tuple[T, Usage]:
    """``run()``'s result and what it cost. (With several workers, ``moved`` is what
    the worker that answered the scrapes saw: each keeps its own metrics.)"""
    pid = s.service.pid
    before = scrape(s.url)
    cpu, redis_cpu, cores = service_cpu_s(pid), redis_cpu_s(s.redis), core_ticks(s.cores)
    started = time.perf_counter()
    out = run()
    wall_s = time.perf_counter() - started
    busy, total = (b - a for a, b in zip(cores, core_ticks(s.cores), strict=True))
    usage = Usage(
        wall_s=wall_s,
        service_cpu_s=service_cpu_s(pid) - cpu,
        redis_cpu_s=redis_cpu_s(s.redis) - redis_cpu,
        core_busy=busy / total if total else math.nan,
        moved=scrape(s.url) - before,
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


def run_batch(s: Stack, workload: wl.Workload, duration_s: float) -> dict[str, Any]:
    shift_s = time.time() - LAST_PING_AGO_S - float(workload.pings.ts.max())
    requests = [(s.key("ingest"), body) for body in batch_bodies(workload, shift_s)]
    load, usage = under_load(
        s, lambda: run_loader(s, "/v1/pings/batch", requests, BATCH_CONNECTIONS, duration_s)
    )
    pings = int(load["pings"])
    return {
        "connections": BATCH_CONNECTIONS,
        **{k: load[k] for k in ("requests", "wall_s", "http", "results", "p50_ms", "p99_ms")},
        "pings": pings,
        "pings_per_s": pings / load["wall_s"],
        "pings_per_cpu_s": pings / usage.service_cpu_s if usage.service_cpu_s else math.nan,
        **usage.as_dict(),
        "notifications": usage.moved["notifications"],
        "state_conflicts": usage.moved["state_conflicts"],
    }


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
        pinned(LOAD_CORE, argv),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=duration_s + 120,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# single pings


def last_positions(workload: wl.Workload) -> list[tuple[str, float, float, float]]:
    """Each device's id and its last ping's lat, lng and accuracy."""
    p = workload.pings
    devices, first_from_end = np.unique(p.device[::-1], return_index=True)
    rows = len(p) - 1 - first_from_end
    return [
        (workload.device_ids[d], float(p.lat[r]), float(p.lng[r]), float(p.accuracy_m[r]))
        for d, r in zip(devices.tolist(), rows.tolist(), strict=True)
    ]


def lua_script(
    s: Stack, devices: Sequence[tuple[str, float, float, float]], base_ts: float
) -> Path:
    rows = ",\n".join(
        f"  {{{json.dumps(d)}, {json.dumps('Bearer ' + s.tokens[d])}, {lat:.6f}, {lng:.6f}, "
        f"{accuracy:.1f}}}"
        for d, lat, lng, accuracy in devices
    )
    text = Template(LUA_TEMPLATE.read_text()).substitute(
        devices=rows, base_ts=f"{base_ts:.3f}", step_s=repr(TS_STEP_S)
    )
    path = s.dir / "ping.lua"
    path.write_text(text)
    return path


def run_wrk(
    s: Stack, script: Path | None, connections: int, duration_s: float, path: str = "/v1/pings"
) -> dict[str, Any]:
    seconds = max(1, math.ceil(duration_s))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += [] if script is None else ["-s", str(script)]
    done = subprocess.run(
        pinned(LOAD_CORE, [*argv, f"{s.url}{path}"]),
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    return parse_wrk(done.stdout)


WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, req/s, p50 and p99 (ms), non-2xx and socket errors from wrk's report."""

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
        "accepted": int(number(r"accepted answers: (\d+)", -1)),  # -1: not counted
    }


def single_requests(
    s: Stack, devices: Sequence[tuple[str, float, float, float]], base_ts: float, count: int
) -> Iterator[tuple[str, bytes]]:
    """What ping.lua sends, for the aiohttp loader."""
    for n in range(count):
        device_id, lat, lng, accuracy = devices[n % len(devices)]
        ping = {
            "device_id": device_id,
            "lat": round(lat, 6),
            "lon": round(lng, 6),
            "accuracy_m": round(accuracy, 1),
            "ts": round(base_ts + (n + 1) * TS_STEP_S, 3),
        }
        yield s.tokens[device_id], msgspec.json.encode(ping)


def run_single(
    s: Stack,
    devices: Sequence[tuple[str, float, float, float]],
    connections: int,
    duration_s: float,
    base_ts: float,
) -> dict[str, Any]:
    if shutil.which("wrk"):
        script = lua_script(s, devices, base_ts)
        return run_wrk(s, script, connections, duration_s)
    count = int(duration_s * FALLBACK_MAX_RATE)
    requests = single_requests(s, devices, base_ts, count)
    load = run_loader(s, "/v1/pings", requests, connections, duration_s)
    non_2xx = sum(n for status, n in load["http"].items() if not status.startswith("2"))
    return {
        "requests": load["requests"],
        "rps": load["requests"] / load["wall_s"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "non_2xx": non_2xx,
        "socket_errors": 0,
        "accepted": load["results"].get("accepted", 0),
    }


def run_singles(
    s: Stack, workload: wl.Workload, connections: Sequence[int], duration_s: float
) -> list[dict[str, Any]]:
    devices = last_positions(workload)
    base_ts = max(time.time(), s.next_ts)
    out = []
    for n in connections:
        run = functools.partial(run_single, s, devices, n, duration_s, base_ts)
        result, usage = under_load(s, run)
        spent_s = usage.service_cpu_s
        out.append(
            {
                "connections": n,
                **result,
                "rps_per_cpu_s": result["requests"] / spent_s if spent_s else math.nan,
                **usage.as_dict(),
                "results": {k: v for k, v in usage.moved.items() if k != "state_conflicts"},
            }
        )
        # the next run's pings come after every ping of this one, for every device
        base_ts = max(time.time(), base_ts + (result["requests"] + 1) * TS_STEP_S) + 1
    s.next_ts = base_ts
    return out


def run_ceiling(s: Stack, connections: int, duration_s: float) -> dict[str, Any] | None:
    """``GET /healthz`` with wrk: the same process, middlewares and core answering with no
    work at all, no Redis, no body to parse. No ping route can be faster than this."""
    if not shutil.which("wrk"):
        return None
    result, usage = under_load(s, lambda: run_wrk(s, None, connections, duration_s, "/healthz"))
    spent_s = usage.service_cpu_s
    return {
        "connections": connections,
        **result,
        "rps_per_cpu_s": result["requests"] / spent_s if spent_s else math.nan,
        **usage.as_dict(),
    }


def run_workers(
    s: Stack, workload: wl.Workload, workers: int, connections: int, duration_s: float
) -> dict[str, Any]:
    """Single pings at ``connections`` to ``geofence serve`` with ``workers`` processes
    sharing the port, free to run on every core (where Redis and the load run too): the
    service of the stack is stopped and this one runs on its Redis, devices and offer."""
    s.service.stop()
    port = free_port()
    env = {**s.env, "GEOFENCE_PORT": str(port), "GEOFENCE_WORKERS": str(workers)}
    cores = ",".join(str(n) for n in range(os.cpu_count() or 1))
    service = Process(f"service-{workers}-workers", pinned(cores, SERVE), env, s.dir)
    with running(service):
        service.start()
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_ready(service, url))
        # wrk's connections are made once, at its start: every worker must take its share
        asyncio.run(all_listening(service, port, workers))
        shared = dataclasses.replace(s, url=url, service=service, cores=cores)
        [run] = run_singles(shared, workload, [connections], duration_s)
    s.next_ts = shared.next_ts
    return {**run, "workers": workers, "cores": cores}


# the whole measurement


def measure(
    workload: wl.Workload, *, duration_s: float = 20.0, connections: Sequence[int] = (10, 50)
) -> dict[str, Any]:
    """Batch ingest, then single pings at each of ``connections``, on one fresh service."""
    with stack(workload) as s:
        batch = run_batch(s, workload, duration_s)
        single = run_singles(s, workload, connections, duration_s)
        ceiling = run_ceiling(s, max(connections), duration_s / 2)
        rss_mib = rss_kib(s.service.pid) / 1024
        workers = run_workers(s, workload, WORKERS, max(connections), duration_s)
        return {
            "ceiling": ceiling,
            "workers": workers,
            "single_loader": "wrk" if shutil.which("wrk") else "aiohttp",
            "settings": s.settings,
            "fences": len(workload.fences),
            "devices": len(workload.device_ids),
            "workload_pings": len(workload.pings),
            "duration_s": duration_s,
            "batch": batch,
            "single": single,
            "service_rss_mib": rss_mib,
            "redis_used_memory_mib": redis_used_mib(s.redis),
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
    b = r["batch"]
    lines = [
        (
            f"{r['fences']} fences, {r['devices']} devices, {r['workload_pings']} pings in the "
            f"workload; runs of {r['duration_s']:g} s; service on core {SERVICE_CORE}, Redis and "
            f"the loaders on core {LOAD_CORE}"
        ),
        "settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
        "",
        (
            f"batch ingest, {b['connections']} requests in flight: {b['pings']} pings in "
            f"{b['requests']} requests, {b['wall_s']:.1f} s, {_cpu(b)}"
        ),
        (
            f"  pings/s per core {b['pings_per_cpu_s']:,.0f}, "
            f"wall pings/s {b['pings_per_s']:,.0f}, "
            f"request p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms"
        ),
        (
            f"  HTTP {_counts(b['http'])}; results {_counts(b['results'])}; "
            f"notifications {b['notifications']}; CAS retries {b['state_conflicts']}"
        ),
        "",
        f"single ping ({r['single_loader']}):",
        "",
        "| connections | req/s | req/s per core | p50 ms | p99 ms | errors | CPU | results |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {x['connections']} | {x['rps']:,.0f} | {x['rps_per_cpu_s']:,.0f} | {x['p50_ms']:.2f} "
        f"| {x['p99_ms']:.2f} | {x['non_2xx'] + x['socket_errors']} | {_cpu(x)} "
        f"| {_counts(x['results'])} |"
        for x in r["single"]
    ]
    lines += ["", ceiling_line(r.get("ceiling")), "", workers_line(r["workers"])]
    lines += [
        "",
        (
            f"service RSS {r['service_rss_mib']:.0f} MiB after the runs; "
            f"Redis used_memory {r['redis_used_memory_mib']:.0f} MiB"
        ),
    ]
    return "\n".join(lines)


def ceiling_line(c: dict[str, Any] | None) -> str:
    if c is None:
        return "the ceiling (GET /healthz with wrk) was not measured: wrk is not installed"
    return (
        f"the ceiling, GET /healthz (no work) at {c['connections']} connections: "
        f"{c['rps']:,.0f} req/s ({c['rps_per_cpu_s']:,.0f} per core), p50 {c['p50_ms']:.2f} ms, "
        f"p99 {c['p99_ms']:.2f} ms; {_cpu(c)}"
    )


def workers_line(w: dict[str, Any]) -> str:
    accepted = "" if w["accepted"] < 0 else f", {w['accepted']:,} accepted"
    return (
        f"{w['workers']} workers (GEOFENCE_WORKERS) on cores {w['cores']}, which Redis and wrk "
        f"share, at {w['connections']} connections: {w['rps']:,.0f} req/s "
        f"({w['rps_per_cpu_s']:,.0f} per core), p50 {w['p50_ms']:.2f} ms, "
        f"p99 {w['p99_ms']:.2f} ms, {w['non_2xx'] + w['socket_errors']} errors{accepted}; "
        f"{_cpu(w)}"
    )


def _cpu(run: dict[str, Any]) -> str:
    return (
        f"service CPU {run['service_cpu_s']:.1f} s (core busy {run['service_core_busy']:.0%}, "
        f"by the service {run['service_share']:.0%}), Redis CPU {run['redis_cpu_s']:.1f} s"
    )


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"


def arguments(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The flags of a benchmark over HTTP: how many devices, how long each run."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--duration", type=float, default=20.0, help="most seconds of a run")
    return parser


def workload_of(args: argparse.Namespace) -> wl.Workload:
    """The workload the flags of :func:`arguments` ask for."""
    return wl.make(fences=FENCES, devices=args.devices, duration_s=WORKLOAD_S)


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments("python -m benchmarks.http", __doc__).parse_args(argv)
    print(table(measure(workload_of(args), duration_s=args.duration)))


if __name__ == "__main__":
    main()

"""A whole deployment on loopback: redis-server, the fake push gateway, `geofence serve` x N.

The rules are shortened (a 10 s dwell, a 5 s exit debounce, a 90 s entry cooldown) so a
walk of a minute goes through entries, exits and suppressed revisits, and the caps are
opened (``generous_offer``) so that every entry makes a notification: then "every entry
got its notification delivered" can be checked one for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from geofence.config import Settings
from geofence.domain.devices import device_ref
from tests.fakes.gateway import GATEWAY
from tools.processes import (
    SERVE,
    Process,
    RedisServer,
    free_port,
    service_env,
)
from tools.redis_cluster import RedisCluster

PUSH_SECRET = "sys-push-secret"
ADMIN = {"Authorization": "Bearer sys-admin-key-0001"}
SDK = {"Authorization": "Bearer sys-sdk-key-000001"}
RULES: dict[str, Any] = {
    "dwell_s": 10,
    "exit_s": 5,
    "exit_margin_m": 15,
    "entry_cooldown_s": 90,
    "device_cap": 1000,
    "push_timeout_s": 1,  # a dispatcher's lease is 2 x 1 + 5 s: a killed one's items return soon
    "catalogue_poll_s": 1,
}


class Service(Process):
    def __init__(self, name: str, env: dict[str, str], logs: Path, port: int) -> None:
        super().__init__(name, SERVE, env, logs)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


class Cluster:
    """Processes of one test module; ``logs`` keeps every process's output."""

    def __init__(
        self,
        logs: Path,
        *,
        services: int = 1,
        durable: bool = True,
        redis_cluster: RedisCluster | None = None,
        **rules: Any,
    ) -> None:
        """``redis_cluster``: the services share that Redis Cluster (started and
        stopped with them) instead of a redis-server of their own (``redis``, then
        never started)."""
        self.logs = logs
        self.redis = RedisServer(logs, durable=durable)
        self.redis_cluster = redis_cluster
        self.redis_url = self.redis.url if redis_cluster is None else redis_cluster.url
        self.prefix = "gfsys"
        gateway_port = free_port()
        argv = [*GATEWAY, "--port", str(gateway_port), "--secret", PUSH_SECRET]
        self.gateway = Process("gateway", argv, {}, logs)
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.rules = {**RULES, **rules}
        self.services = [self._service(i) for i in range(services)]
        self.settings = Settings.from_env(self.services[0].env)

    def _service(self, i: int) -> Service:
        port = free_port()
        env = service_env(
            port,
            redis_url=self.redis_url,
            redis_prefix=self.prefix,
            push_url=f"{self.gateway_url}/push",
            push_secret=PUSH_SECRET,
            **self.rules,
        )
        return Service(f"service-{i}", env, self.logs, port)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.services]

    def start(self) -> None:
        if self.redis_cluster is not None:
            self.redis_cluster.start()
        else:
            self.redis.start()
            self.redis.wait_ready()
        self.gateway.start()
        wait_http_sync(f"{self.gateway_url}/_control/calls")
        for service in self.services:  # one at a time: the first seeds the catalogue
            service.start()
            wait_http_sync(f"{service.url}/readyz")

    def stop(self) -> None:
        for p in (*self.services, self.gateway, self.redis):
            p.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()

    def ref(self, device_id: str) -> str:
        assert self.settings.id_secret is not None
        return device_ref(device_id, self.settings.id_secret.encode())

    def service_logs(self) -> str:
        return "".join(s.log() for s in self.services)


@contextlib.contextmanager
def running_cluster(
    logs: Path,
    *,
    services: int = 1,
    durable: bool = True,
    redis_cluster: RedisCluster | None = None,
    **rules: Any,
) -> Iterator[Cluster]:
    cluster = Cluster(
        logs, services=services, durable=durable, redis_cluster=redis_cluster, **rules
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def wait_http_sync(url: str, timeout_s: float = 60.0) -> None:
    """For fixtures outside the event loop: until ``url`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(0.1)


# --- the API, as the tests' clients call it ----------------------------------------------


def generous_offer(store_ids: Iterable[str], **overrides: Any) -> dict[str, Any]:
    """Matches every store, with no per-device limit to speak of: each entry gets it."""
    return {
        "title": "Welcome",
        "body": "Today at {store_name}",
        "store_ids": sorted(store_ids),
        "starts_at": 0,
        "ends_at": 4e9,
        "per_device_limit": 1000,
        "per_device_cooldown_s": 0,
        **overrides,
    }


async def put_offer(
    session: aiohttp.ClientSession, url: str, offer_id: str, offer: dict[str, Any]
) -> None:
    async with session.put(f"{url}/v1/offers/{offer_id}", json=offer, headers=ADMIN) as resp:
        assert resp.status in (200, 201), await resp.text()


async def register(
    session: aiohttp.ClientSession, url: str, device_ids: Iterable[str], *, parallel: int = 16
) -> dict[str, str]:
    """Registers the devices (location and offers consent, a push token): their tokens."""
    tokens: dict[str, str] = {}
    gate = asyncio.Semaphore(parallel)

    async def one(device_id: str) -> None:
        body = {
            "device_id": device_id,
            "consent": {"location": True, "offers": True},
            "push_token": f"push-{device_id}",
        }
        async with gate, session.post(f"{url}/v1/devices", json=body, headers=SDK) as resp:
            assert resp.status == 201, await resp.text()
            tokens[device_id] = (await resp.json())["device_token"]

    await asyncio.gather(*(one(d) for d in device_ids))
    return tokens


async def erase(
    session: aiohttp.ClientSession, url: str, device_id: str, token: str | None
) -> None:
    """DELETE the device with its own token, or with the admin key when ``token`` is None."""
    headers = ADMIN if token is None else {"Authorization": f"Bearer {token}"}
    for _ in range(20):
        async with session.delete(f"{url}/v1/devices/{device_id}", headers=headers) as resp:
            if resp.status != 503:
                assert resp.status == 204, await resp.text()
                return
            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
    raise AssertionError(f"{device_id} could not be erased: 503 after 503")


async def gateway_calls(session: aiohttp.ClientSession, gateway_url: str) -> list[dict[str, Any]]:
    async with session.get(f"{gateway_url}/_control/calls") as resp:
        calls: list[dict[str, Any]] = msgspec.json.decode(await resp.read())
        return calls


async def gateway_control(
    session: aiohttp.ClientSession, gateway_url: str, action: str, body: Any = None
) -> None:
    """``reset``, ``script`` or ``fail_until`` (tests/fakes/gateway.py)."""
    async with session.post(f"{gateway_url}/_control/{action}", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def wait_delivered(
    session: aiohttp.ClientSession, gateway_url: str, ids: Iterable[str], timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """The gateway's calls once every one of ``ids`` was answered 200 (or the time is up)."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout_s
    while True:
        calls = await gateway_calls(session, gateway_url)
        done = {c["json"]["notification_id"] for c in calls if c["status"] == 200}
        if wanted <= done or time.monotonic() > deadline:
            return calls
        await asyncio.sleep(0.5)


async def ping_counts(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """``geofence_pings_total`` of one process by ``status/reason``."""
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("geofence_pings_total{"):
            labels, value = line[len("geofence_pings_total{") :].rsplit("} ", 1)
            fields = dict(part.split("=", 1) for part in labels.split(","))
            key = f"{fields['status'].strip(chr(34))}/{fields['reason'].strip(chr(34))}"
            counts[key] = counts.get(key, 0.0) + float(value)
    return counts

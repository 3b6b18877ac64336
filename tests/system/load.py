"""A paced load of many walking devices, each sending its pings one after another.

Every device has a fixed schedule (one ping every ``period_s``, the devices spread evenly
over the period), so the offered rate is ``len(devices) / period_s`` whatever the answers
do; a device sends its next ping only once the previous one is settled, as a phone SDK
does, so the service sees each device's pings in order. A device that falls behind (slow
answers, an outage) sends its current ping at once and drops the ones it missed, as a
phone sends its latest fix: the offered rate never exceeds the schedule's, so an outage
is not followed by a storm of backlog.

With ``retry``, a ping without an answer is resent, and one answered 429 or 503 is resent
after its ``Retry-After``, until it is acknowledged or the run's drain time is over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tests.system.cluster import (
    Cluster,
    gateway_control,
    generous_offer,
    put_offer,
    register,
)
from tests.system.history import Attempt, History
from tests.system.walkers import Town, Walker, walkers

LOST_RETRY_S = 0.5  # a resend after no answer at all (the service may be restarting)
MAX_RETRY_AFTER_S = 5.0


@dataclass
class Device:
    walker: Walker
    token: str
    gone: bool = False  # erased (401/404): it sends no more

    @property
    def device_id(self) -> str:
        return self.walker.device_id


async def devices(
    session: aiohttp.ClientSession, url: str, walkers: Sequence[Walker]
) -> list[Device]:
    tokens = await register(session, url, [w.device_id for w in walkers])
    return [Device(w, tokens[w.device_id]) for w in walkers]


async def offered_fleet(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    town: Town,
    n: int,
    *,
    label: str,
    seed: int,
    gateway: dict[str, Any] | None = None,
) -> list[Device]:
    """``n`` walkers registered, the generous offer on every store of the town, and the
    gateway reset, then told ``gateway`` (a ``fail_until`` body) if given."""
    url = cluster.services[0].url
    await put_offer(session, url, "welcome", generous_offer(town.ids))
    await gateway_control(session, cluster.gateway_url, "reset")
    if gateway is not None:
        await gateway_control(session, cluster.gateway_url, "fail_until", gateway)
    return await devices(session, url, walkers(town, n, label=label, seed=seed))


class Load:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: Sequence[str],
        *,
        period_s: float,
        retry: bool = True,
        alternate: bool = False,
        timeout_s: float = 10.0,
        drain_s: float = 30.0,
        history: History | None = None,
    ) -> None:
        self.session = session
        self.urls = list(urls)
        self.period_s = period_s
        self.retry = retry
        self.alternate = alternate  # each ping to the next service in turn
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.drain_s = drain_s
        self.history = history if history is not None else History()
        self.started = time.monotonic()
        self.started_wall = time.time()

    async def run(self, fleet: Sequence[Device], duration_s: float) -> History:
        """Every device's schedule for ``duration_s``; returns once all are settled."""
        self.started, self.started_wall = time.monotonic(), time.time()
        end = self.started + duration_s
        await asyncio.gather(*(self._device(d, i, len(fleet), end) for i, d in enumerate(fleet)))
        return self.history

    async def once(self, fleet: Sequence[Device]) -> History:
        """One ping from every device, all sent at the same moment, none resent."""
        self.started, self.started_wall = time.monotonic(), time.time()
        ts = round(self.started_wall, 3)

        async def one(i: int, device: Device) -> None:
            ping = device.walker.ping(ts, self.started_wall)
            url = self.urls[i % len(self.urls)]
            await self.send(device, 0, url, ping, msgspec.json.encode(ping))

        await asyncio.gather(*(one(i, d) for i, d in enumerate(fleet)))
        return self.history

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def at(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` into the run."""
        await asyncio.sleep(max(0.0, self.started + offset_s - time.monotonic()))

    async def _device(self, device: Device, i: int, n: int, end: float) -> None:
        offset = self.period_s * i / n
        seq = 0
        while not device.gone:
            due = self.started + offset + seq * self.period_s
            if due >= end:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            ts = round(self.started_wall + (due - self.started), 3)
            url = self.urls[(seq if self.alternate else i) % len(self.urls)]
            await self._settle(device, seq, url, ts, end + self.drain_s)
            current = int((time.monotonic() - self.started - offset) // self.period_s)
            seq = max(seq + 1, current)

    async def _settle(self, device: Device, seq: int, url: str, ts: float, give_up: float) -> None:
        ping = device.walker.ping(ts, self.started_wall)
        body = msgspec.json.encode(ping)
        while True:
            attempt = await self.send(device, seq, url, ping, body)
            if attempt.status in (401, 404):
                device.gone = True
            if attempt.acked or device.gone or not self.retry:
                return
            if attempt.status not in (None, 429, 503):
                return  # refused for good; the test looks at it
            wait_s = LOST_RETRY_S if attempt.status is None else _retry_after(attempt)
            if time.monotonic() + wait_s > give_up:
                return
            await asyncio.sleep(wait_s)

    async def send(
        self, device: Device, seq: int, url: str, ping: dict[str, object], body: bytes
    ) -> Attempt:
        attempt = Attempt(device.device_id, seq, ping, url, time.time(), time.monotonic())
        self.history.attempts.append(attempt)
        headers = {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"}
        try:
            async with self.session.post(
                f"{url}/v1/pings", data=body, headers=headers, timeout=self.timeout
            ) as resp:
                raw = await resp.read()
                attempt.status = resp.status
                attempt.retry_after = resp.headers.get("Retry-After")
                attempt.body = msgspec.json.decode(raw) if raw else None
        except (aiohttp.ClientError, msgspec.DecodeError, TimeoutError, OSError) as e:
            attempt.error = repr(e)
        finally:
            attempt.done = time.monotonic()
        return attempt


def _retry_after(attempt: Attempt) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.05, float(attempt.retry_after or "1")))
    except ValueError:
        return 1.0


def client_session(limit: int = 2000) -> aiohttp.ClientSession:
    """At most ``limit`` connections (a load balancer's upstream pool), kept a minute."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector)


async def warm(session: aiohttp.ClientSession, url: str, connections: int) -> None:
    """Open ``connections`` kept-alive connections ahead of a burst.

    Hundreds of phones reach a service through a load balancer's open connections, not
    with hundreds of new TCP handshakes in one second; on one host those would overflow
    the listen backlog (128) and the clients' SYN retries would add seconds that are
    the kernel's, not the service's.
    """

    async def one() -> None:
        async with session.get(f"{url}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(connections)))

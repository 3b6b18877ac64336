"""The app served as ``geofence serve`` serves it (geofence.http.server's runner), on a
real port, so that tests can send what no well-behaved client would: raw bytes, bodies
that never arrive, connections that hang up half way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from geofence.config import Settings
from geofence.http.app import create_app
from geofence.http.server import runner
from geofence.ports import StateStore
from tests.conftest import SDK_KEY
from tests.http.conftest import client, make_client
from tests.http.test_pings_api import INSIDE, ping_body

__all__ = ["client", "make_client"]  # the fixtures of tests/http, for tests here too

CONSENT = {"location": True, "offers": True}
ANSWER_WITHIN_S = 5.0  # generous: the machine is shared; a refusal comes long before


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self
        doc: dict[str, Any] = msgspec.json.decode(self.body)
        assert doc["status"] == self.status
        assert {"type", "title", "detail"} <= doc.keys()
        return doc


@dataclass
class Served:
    app: web.Application
    port: int
    session: aiohttp.ClientSession
    sdk_key: str = SDK_KEY
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def send(self, head: bytes, body: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
        """Open a connection and send ``head`` (request line and headers, without the
        blank line that ends them) and the first ``body`` bytes; the rest is up to the
        test."""
        reader, writer = await self.connect()
        writer.write(head + b"\r\n\r\n" + body)
        await writer.drain()
        return reader, writer

    async def register(self, device_id: str, **extra: Any) -> str:
        body = {"device_id": device_id, "consent": CONSENT, **extra}
        headers = {"Authorization": f"Bearer {self.sdk_key}"}
        async with self.session.post(f"{self.base}/v1/devices", json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
            token: str = (await r.json())["device_token"]
            return token

    async def metrics(self) -> str:
        async with self.session.get(f"{self.base}/metrics") as resp:
            return await resp.text()


async def read_answer(reader: asyncio.StreamReader, within_s: float = ANSWER_WITHIN_S) -> Answer:
    """One HTTP/1.1 answer, read off the socket; fails if none comes within ``within_s``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within_s)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), within_s)
    return Answer(int(status_line.split(" ")[1]), headers, body)


def post_head(path: str, token: str, length: int, *, method: bytes = b"POST") -> bytes:
    return b"\r\n".join(
        [
            method + b" " + path.encode() + b" HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Authorization: Bearer " + token.encode(),
            b"Content-Type: application/json",
            b"Content-Length: " + str(length).encode(),
        ]
    )


async def trickle(served: Served, token: str, stop: asyncio.Event) -> None:
    """A ping body sent a byte at a time, until told to stop or cut off."""
    try:
        _, writer = await served.send(post_head("/v1/pings", token, 1000), b"{")
        while not stop.is_set() and not writer.is_closing():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        return  # the service closed it: what it should do


async def genuine_pings(served: Served, token: str, device_id: str, n: int) -> list[int]:
    """The statuses of ``n`` pings of a device, one after the other."""
    statuses = []
    start = time.time() - 600
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(n):
        body = ping_body(device_id, INSIDE, start + i)
        async with served.session.post(f"{served.base}/v1/pings", json=body, headers=headers) as r:
            statuses.append(r.status)
    return statuses


async def flood_and_ping(
    served: Served, tokens: dict[str, str], flooders: int, n: int
) -> list[int]:
    """``flooders`` connections trickling bodies with made-up tokens and, once they are
    under way, ``n`` genuine pings of each device in ``tokens``: the pings' statuses."""
    stop = asyncio.Event()
    made_up = [f"{i:08x}.made-up-{i}" for i in range(flooders)]  # the old token shape
    flood = [asyncio.create_task(trickle(served, token, stop)) for token in made_up]
    await asyncio.sleep(0.5)
    answers = await asyncio.gather(*(genuine_pings(served, t, d, n) for d, t in tokens.items()))
    stop.set()
    await asyncio.gather(*flood)
    return [status for device in answers for status in device]


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(store: StateStore, settings: Settings) -> AsyncIterator[Serve]:
    """Starts the app on the parametrised store, served by ``geofence serve``'s runner on
    a free port; settings can be changed. Everything is stopped afterwards."""
    started: list[tuple[web.AppRunner, Served]] = []

    async def start(**changes: Any) -> Served:
        changed = settings.replace(**changes)
        # the tests leave bodies unsent: no lingering for them at teardown
        edge = runner(create_app(changed, store=store), changed, linger_s=0.1)
        await edge.setup()
        await web.TCPSite(edge, "127.0.0.1", 0).start()
        port = edge.addresses[0][1]
        served = Served(edge.app, port, aiohttp.ClientSession())
        started.append((edge, served))
        return served

    yield start
    for edge, served in started:
        for writer in served.writers:
            writer.close()
        await served.session.close()
        await edge.cleanup()

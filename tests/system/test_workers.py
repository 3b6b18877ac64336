"""``GEOFENCE_WORKERS=2``: two forked processes serve one port (SO_REUSEPORT). A device's
single pings, each on a connection of its own, land on both, and the visit rules still
see one device: one entry each, one notification each. SIGTERM stops the lot cleanly;
a worker that dies takes the others down with it, and its exit code is the service's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REDIS_URL, drop_prefix, redis_client_or_skip
from tests.system.cluster import generous_offer, put_offer, register
from tests.system.test_kill9 import walk
from tools.processes import (
    ESTABLISHED,
    SERVE,
    Process,
    all_listening,
    children,
    free_port,
    running,
    service_env,
    socket_owners,
    tcp_sockets,
    wait_http,
)

pytestmark = pytest.mark.redis

DEVICES = 12
STORE = "osm-way-88777732"  # Rautamies, where test_kill9.walk goes in


async def test_two_workers_share_the_port_and_the_devices(tmp_path: Path) -> None:
    client = await redis_client_or_skip()
    prefix = f"gftest-workers-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(port, redis_url=REDIS_URL, redis_prefix=prefix, workers=2)
    service = Process("service", SERVE, env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        with running(service):
            service.start()
            await wait_http(f"{base}/readyz")
            workers = await all_listening(service, port, 2)  # each holds a listening socket

            served, results = await _walk_every_device_in(base, port, workers)
            assert set(served) == set(workers), served  # both took some of the pings
            entries = Counter(e["store_id"] for r in results for e in r["events"])
            assert entries == {STORE: DEVICES}
            assert sum(len(r["notifications"]) for r in results) == DEVICES

            service.started.send_signal(signal.SIGTERM)
            assert service.started.wait(timeout=20) == 0
            assert not any(map(alive, workers))
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


async def test_the_workers_share_one_index_built_before_the_fork(tmp_path: Path) -> None:
    """The catalogue's index is built once, in the process that forks the workers: each
    worker adopts it (``catalogue shared``) and builds none of its own."""
    client = await redis_client_or_skip()
    prefix = f"gftest-workers-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(port, redis_url=REDIS_URL, redis_prefix=prefix, workers=2)
    service = Process("service", SERVE, env, tmp_path)
    try:
        with running(service):
            service.start()
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            await all_listening(service, port, 2)
            events = Counter(
                json.loads(line)["message"]
                for line in service.log().splitlines()
                if line.startswith("{")
            )
            assert events["catalogue seeded"] == 1
            assert events["catalogue loaded"] == 1, service.log()[-2000:]
            assert events["catalogue shared"] == 2
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


async def _walk_every_device_in(
    base: str, port: int, workers: list[int]
) -> tuple[Counter[int], list[dict[str, Any]]]:
    """Every device walks into the store, each ping a request on a new connection: the
    worker that served each request, and the results."""
    async with aiohttp.ClientSession() as session:
        await put_offer(session, base, "welcome", generous_offer([STORE]))
        tokens = await register(session, base, [f"worker-{i}" for i in range(DEVICES)])
    served: Counter[int] = Counter()
    results = []
    now = time.time()
    walks = [walk(device_id, now) for device_id in tokens]  # the same four steps each
    for step in range(len(walks[0])):
        for ping in (w[step] for w in walks):
            token = tokens[ping["device_id"]]
            worker, result = await _post_alone(port, "/v1/pings", ping, token, workers)
            served[worker] += 1
            results.append(result)
    return served, results


async def _post_alone(
    port: int, path: str, body: dict[str, Any], token: str, workers: list[int]
) -> tuple[int, dict[str, Any]]:
    """POST on a connection of its own: the worker holding its server end, and the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        status = (await reader.readline()).split()[1]
        headers = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(headers.split("content-length:")[1].split()[0])
        answer = await reader.readexactly(length)
        assert status == b"200", answer
        worker = _server_of(port, writer.get_extra_info("sockname")[1], workers)
        return worker, json.loads(answer)
    finally:
        writer.close()


def alive(pid: int) -> bool:
    """Whether the process ``pid`` still exists."""
    return Path(f"/proc/{pid}").exists()


def _server_of(port: int, client_port: int, workers: list[int]) -> int:
    """The worker holding the server's end of the connection from ``client_port``."""
    owners = socket_owners(workers)
    [inode] = [
        i
        for remote, state, i in tcp_sockets(port)
        if remote == client_port and state == ESTABLISHED
    ]
    return owners[inode]


async def test_a_worker_that_dies_stops_the_service(tmp_path: Path) -> None:
    client = await redis_client_or_skip()
    prefix = f"gftest-workers-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(port, redis_url=REDIS_URL, redis_prefix=prefix, workers=2, stores="")
    service = Process("service", SERVE, env, tmp_path)
    try:
        with running(service):
            service.start()
            await wait_http(f"http://127.0.0.1:{port}/healthz")
            first, second = children(service.pid)
            os.kill(first, signal.SIGKILL)
            assert service.started.wait(timeout=20) == 128 + signal.SIGKILL
            assert not alive(second)
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()

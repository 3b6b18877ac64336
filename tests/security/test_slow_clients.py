"""Bounded slow clients (issue 23 item 2): bodies that trickle in from strangers take no
slot from genuine pings; a genuine body too slow gets 408 and its slot back; idle
keep-alive connections are closed."""

from __future__ import annotations

import asyncio
import time

from geofence.http.keys import PING_GATE
from tests.http.test_pings_api import INSIDE, ping_body
from tests.security.conftest import Serve, flood_and_ping, post_head, read_answer

FLOODERS = 40
DEVICES = 10
PINGS_EACH = 10


async def test_a_slow_body_flood_of_made_up_tokens_leaves_genuine_pings_served(
    serve: Serve,
) -> None:
    served = await serve(max_inflight=16, stranger_burst=100_000)
    tokens = {f"d{i}": await served.register(f"d{i}") for i in range(DEVICES)}
    statuses = await flood_and_ping(served, tokens, FLOODERS, PINGS_EACH)
    ok = sum(200 <= s < 300 for s in statuses)
    assert ok >= 0.99 * len(statuses), statuses
    assert served.app[PING_GATE].inflight == 0


async def test_a_genuine_body_too_slow_gets_408_and_its_slot_back(serve: Serve) -> None:
    served = await serve(body_timeout_s=0.5, max_inflight=1)
    token = await served.register("slow")
    reader, _ = await served.send(post_head("/v1/pings", token, 200), b'{"device_id": ')
    answer = await read_answer(reader)
    assert answer.status == 408
    assert answer.problem()["type"] == "/problems/body-timeout"
    assert served.app[PING_GATE].inflight == 0
    headers = {"Authorization": f"Bearer {token}"}
    body = ping_body("slow", INSIDE, time.time() - 5)
    async with served.session.post(f"{served.base}/v1/pings", json=body, headers=headers) as r:
        assert r.status == 200  # the one slot is free again
    text = await served.metrics()
    assert 'geofence_http_requests_total{route="/v1/pings",status="408"} 1.0' in text


async def test_idle_keep_alive_connections_are_closed(serve: Serve) -> None:
    served = await serve(keepalive_s=0.3)
    reader, writer = await served.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await read_answer(reader)
    assert answer.status == 200
    assert answer.headers.get("connection", "").lower() != "close"
    # the service closes the idle connection: end of stream, long before aiohttp's 75 s
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""

"""``read_body``: a body that has arrived whole before the handler runs (most pings) is
taken as it is, and held to the same limit as one still on its way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from geofence.config import Settings
from geofence.http.errors import problem_middleware
from geofence.http.keys import METRICS, SETTINGS
from geofence.http.schemas import read_body
from geofence.metrics import Metrics

LIMIT = 64


async def echo_length(request: web.Request) -> web.Response:
    body = await read_body(request, limit=LIMIT)
    return web.json_response({"bytes": len(body), "head": body[:8].decode()})


async def served(aiohttp_server: Any) -> Any:
    app = web.Application(middlewares=[problem_middleware])
    app[SETTINGS] = Settings()
    app[METRICS] = Metrics()
    app.router.add_post("/echo", echo_length)
    return await aiohttp_server(app)


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def exchange(server: Any, head: bytes, body: bytes) -> tuple[int, bytes]:
    """One request written in one go (so its body is in before the handler runs)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + b"\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def head(extra: str) -> bytes:
    return (
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\n{extra}"
    ).encode()


@pytest.mark.parametrize("size", [0, 1, LIMIT])
async def test_a_body_in_whole_is_read_whole(aiohttp_server: Any, size: int) -> None:
    server = await served(aiohttp_server)
    body = b"x" * size
    status, answer = await exchange(server, head(f"Content-Length: {size}\r\n"), body)
    assert status == 200
    assert b'"bytes": %d' % size in answer


async def test_a_chunked_body_in_whole_comes_in_one_piece(aiohttp_server: Any) -> None:
    server = await served(aiohttp_server)
    pieces = [b"abcd", b"efgh", b"ij"]
    status, answer = await exchange(server, head("Transfer-Encoding: chunked\r\n"), chunked(pieces))
    assert status == 200
    assert b'"bytes": 10' in answer
    assert b'"head": "abcdefgh"' in answer


async def test_over_the_limit_is_413_whether_its_length_is_told_or_not(
    aiohttp_server: Any,
) -> None:
    server = await served(aiohttp_server)
    over = b"y" * (LIMIT + 1)
    told = await exchange(server, head(f"Content-Length: {LIMIT + 1}\r\n"), over)
    untold = await exchange(
        server, head("Transfer-Encoding: chunked\r\n"), chunked([over[:40], over[40:]])
    )
    for status, answer in (told, untold):
        assert status == 413
        assert b"payload-too-large" in answer

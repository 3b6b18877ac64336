"""No 5xx from bad bytes (issue 23 item 4): a credential that is not UTF-8 or not ASCII
is a 401; a client hanging up mid-body is counted, not an error; an over-long request
line or header is a 4xx problem, and what it held is not logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import ADMIN_KEY
from tests.security.conftest import Serve, Served, post_head, read_answer

ROUTES = [
    (b"POST", b"/v1/pings"),
    (b"GET", b"/v1/stores"),
    (b"PATCH", b"/v1/devices/dev-1"),
    (b"POST", b"/v1/devices"),
]


def raw_request(method: bytes, path: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers])


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe\x80",  # not UTF-8
        ADMIN_KEY.encode() + b"\xff",  # no scheme, a key and a stray byte
        b"Bearer " + ADMIN_KEY.encode() + b"\xc3",  # a key and half a character
        "Bearer tökén".encode(),  # UTF-8, not ASCII
        ("Bearer " + "é" * 40).encode(),
    ],
)
async def test_a_credential_that_is_not_ascii_is_401(
    serve: Serve, authorization: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve()
    for method, path in ROUTES:
        head = raw_request(method, path, b"Authorization: " + authorization, b"Content-Length: 0")
        reader, _ = await served.send(head)
        answer = await read_answer(reader)
        assert answer.status == 401, answer
        answer.problem()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 'status="500"' not in await served.metrics()


async def wait_for_metric(served: Served, line: str) -> str:
    for _ in range(100):
        text = await served.metrics()
        if line in text:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{line!r} never appeared in /metrics:\n{text}")


async def test_a_client_hanging_up_mid_body_is_counted_not_an_error(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve()
    token = await served.register("leaver")
    for path in ("/v1/pings", "/v1/pings/batch", "/v1/devices/leaver"):
        method = b"PATCH" if "devices" in path else b"POST"
        _, writer = await served.send(post_head(path, token, 400, method=method), b'{"device')
        await asyncio.sleep(0.05)
        writer.close()
    text = await wait_for_metric(
        served, 'geofence_requests_refused_total{reason="client-abort"} 3.0'
    )
    assert 'status="5' not in text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


SECRET = "s3cr3t-bearer-value"


@pytest.mark.parametrize(
    ("head", "status", "code"),
    [
        (b"GET /v1/stores?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x", 414, "request-line-too-long"),
        (
            b"GET /v1/stores HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + SECRET.encode()
            + b"x" * 9000,
            431,
            "header-too-large",
        ),
        (
            b"GET /v1/stores HTTP/1.1\r\nHost: x\r\nX-" + b"n" * 9000 + b": 1",
            431,
            "header-too-large",
        ),
        (
            b"GET /v1/stores HTTP/1.1\r\nHost: x\r\n"
            + b"\r\n".join(b"X-H%d: %s" % (i, SECRET.encode()) for i in range(200)),
            431,
            "too-many-headers",
        ),
        (b"\x16\x03\x01 not http at all", 400, "bad-request"),
    ],
)
async def test_a_request_aiohttp_cannot_parse_is_a_4xx_problem_and_not_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture, head: bytes, status: int, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    served = await serve()
    reader, _ = await served.send(head)
    answer = await read_answer(reader)
    assert answer.status == status, answer
    assert answer.problem()["type"] == f"/problems/{code}"
    assert SECRET not in caplog.text
    assert "qqqq" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    async with served.session.get(f"{served.base}/healthz") as resp:
        assert resp.status == 200  # the service goes on

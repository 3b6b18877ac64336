"""The signed HTTP push client against the fake gateway on a loopback port (contract §6)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import msgspec
import pytest
import standardwebhooks
from aiohttp import web

from geofence.adapters.push_http import HttpPush
from geofence.domain.delivery import Attempt, verify, verify_webhook
from tests.fakes import FakeGateway, behaviour

SECRET = "push-secret"
NOW = 1_750_000_000.0
BODY = msgspec.json.encode({"notification_id": "n-1", "title": "10% off", "push_token": "tok"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    async with FakeGateway(secret=SECRET) as gateway:
        yield gateway


@pytest.fixture
async def push(gateway: FakeGateway) -> AsyncIterator[HttpPush]:
    push = HttpPush(gateway.url, SECRET, timeout_s=2.0)
    yield push
    await push.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_headers_and_signature(gateway: FakeGateway, push: HttpPush) -> None:
    before = time.time()
    assert await push.send(BODY, "n-1") == Attempt(status=200)
    [call] = gateway.calls
    assert call.body == BODY
    assert call.json["notification_id"] == "n-1"
    assert call.header("Content-Type") == "application/json"
    assert call.header("Idempotency-Key") == "n-1"
    assert call.signature_valid is True
    header = call.header("X-Geofence-Signature")
    verify(SECRET, header, call.body, now=time.time(), tolerance_s=5)
    assert header is not None
    assert int(header.split(",")[0][2:]) >= int(before)


async def test_the_clock_signs(gateway: FakeGateway) -> None:
    push = HttpPush(gateway.url, SECRET, clock=lambda: NOW + 0.9)
    try:
        await push.send(BODY, "n-2")
    finally:
        await push.close()
    header = gateway.calls[0].header("X-Geofence-Signature")
    assert header is not None
    assert header.startswith(f"t={int(NOW)},v1=")
    verify(SECRET, header, BODY, now=NOW)
    assert gateway.calls[0].signature_error == "signature-stale"  # signed in 2025 by that clock


async def test_a_wrong_secret_is_seen_by_the_gateway(gateway: FakeGateway) -> None:
    push = HttpPush(gateway.url, "not-the-secret")
    try:
        assert await push.send(BODY, "n-3") == Attempt(status=200)
    finally:
        await push.close()
    assert gateway.calls[0].signature_valid is False
    assert gateway.calls[0].signature_error == "signature-mismatch"


@pytest.mark.parametrize(
    ("secret", "library_key"),
    [("whsec_c2VjcmV0LWJ5dGVz", "whsec_c2VjcmV0LWJ5dGVz"), (SECRET, SECRET.encode())],
    ids=["whsec", "raw"],
)
async def test_the_standard_webhooks_headers_pass_the_schemes_library(
    gateway: FakeGateway, secret: str, library_key: str | bytes
) -> None:
    push = HttpPush(gateway.url, secret)
    try:
        await push.send(BODY, "n-1")
    finally:
        await push.close()
    [call] = gateway.calls
    assert call.header("webhook-id") == "n-1"
    x_t = (call.header("X-Geofence-Signature") or "").split(",")[0][2:]
    assert call.header("webhook-timestamp") == x_t  # both signed at the same second
    headers = {k: v for k, v in call.headers.items() if k.lower().startswith("webhook-")}
    assert standardwebhooks.Webhook(library_key).verify(call.body, headers) == json.loads(BODY)
    assert verify_webhook(secret, call.headers, call.body, time.time()) == "n-1"


def test_a_malformed_whsec_secret_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="base64"):
        HttpPush("http://127.0.0.1:1/push", "whsec_!!")


async def test_the_fake_gateway_names_how_a_push_departs_from_the_document(
    gateway: FakeGateway, push: HttpPush
) -> None:
    """The check that holds every dispatched push to the webhooks entry can fail."""
    await push.send(BODY, "n-1")  # signed and keyed, but not a notification
    problems = gateway.calls[0].push_problems
    assert problems
    assert all(p.startswith("body:") for p in problems)
    assert any("'device_ref' is a required property" in p for p in problems)
    async with aiohttp.ClientSession() as session, session.post(gateway.url, data=b"{}") as resp:
        assert resp.status == 200
    unsigned = gateway.calls[1].push_problems
    assert "header Idempotency-Key missing" in unsigned
    assert "header webhook-signature missing" in unsigned


async def test_every_retry_carries_the_same_idempotency_key(
    gateway: FakeGateway, push: HttpPush
) -> None:
    gateway.script(("status", 500), ("status", 503))
    results = [await push.send(BODY, "n-same") for _ in range(3)]
    assert [r.status for r in results] == [500, 503, 200]
    assert {c.header("Idempotency-Key") for c in gateway.calls} == {"n-same"}


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 410, 429, 500, 503])
async def test_status_is_passed_through(gateway: FakeGateway, push: HttpPush, status: int) -> None:
    gateway.script(("status", status))
    assert await push.send(BODY, "n-4") == Attempt(status=status)
    assert gateway.calls[0].status == status


@pytest.mark.parametrize("status", [302, 307])
async def test_a_redirect_is_not_followed(
    gateway: FakeGateway, push: HttpPush, status: int
) -> None:
    """A 3xx is judged like any other answer (rejected), as the webhooks entry says."""
    gateway.script(("status", status, {"Location": "/elsewhere"}))
    assert await push.send(BODY, "n-9") == Attempt(status=status)
    assert [c.path for c in gateway.calls] == ["/push"]


async def test_retry_after_seconds(gateway: FakeGateway, push: HttpPush) -> None:
    gateway.script(("status", 429, {"Retry-After": "7"}))
    assert await push.send(BODY, "n-5") == Attempt(status=429, retry_after_s=7.0)


async def test_retry_after_http_date(gateway: FakeGateway) -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    gateway.script(("status", 503, {"Retry-After": date}))
    push = HttpPush(gateway.url, SECRET, clock=lambda: NOW)
    try:
        assert await push.send(BODY, "n-6") == Attempt(status=503, retry_after_s=30.0)
    finally:
        await push.close()


async def test_retry_after_garbage_is_ignored(gateway: FakeGateway, push: HttpPush) -> None:
    gateway.script(("status", 503, {"Retry-After": "later"}))
    assert await push.send(BODY, "n-7") == Attempt(status=503)


async def test_a_hang_longer_than_the_timeout_is_a_timeout(gateway: FakeGateway) -> None:
    gateway.script(("hang", 5))
    push = HttpPush(gateway.url, SECRET, timeout_s=0.2)
    started = time.monotonic()
    try:
        assert await push.send(BODY, "n-8") == Attempt(error="timeout")
    finally:
        await push.close()
    assert time.monotonic() - started < 2.0
    [call] = await gateway.wait_for_calls(1)
    assert call.header("Idempotency-Key") == "n-8"
    async with asyncio.timeout(2):  # the hang ends with the client: nothing is left running
        while gateway.in_flight:  # noqa: ASYNC110 - the fake signals nothing: poll it
            await asyncio.sleep(0.01)
    assert call.status is None


async def test_a_short_hang_is_answered(gateway: FakeGateway, push: HttpPush) -> None:
    gateway.script(("hang", 0.05))
    assert await push.send(BODY, "n-9") == Attempt(status=200)
    assert gateway.calls[0].status == 200


async def test_a_closed_port_is_a_connection_error() -> None:
    push = HttpPush(f"http://127.0.0.1:{closed_port()}/push", SECRET, timeout_s=2.0)
    try:
        assert await push.send(BODY, "n-10") == Attempt(error="connection")
    finally:
        await push.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """``handler`` on ``/push`` of a loopback port of its own: the push URL."""
    app = web.Application()
    app.router.add_post("/push", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/push"
    finally:
        await runner.cleanup()


async def test_a_large_answer_is_not_kept() -> None:
    async def big(_request: web.Request) -> web.Response:
        return web.Response(status=502, body=b"x" * 1_000_000)

    async with serving(big) as url:
        push = HttpPush(url, SECRET, timeout_s=2.0)
        try:
            assert await push.send(BODY, "n-12") == Attempt(status=502)
            assert await push.send(BODY, "n-13") == Attempt(status=502)
        finally:
            await push.close()


async def test_a_slow_answer_is_read_so_the_connection_is_reused() -> None:
    peers: list[object] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(status=503)
        resp.content_length = 2_000
        await resp.prepare(request)
        await resp.write(b"x" * 1_000)
        await asyncio.sleep(0.05)
        await resp.write(b"y" * 1_000)
        await resp.write_eof()
        return resp

    async with serving(slow) as url:
        push = HttpPush(url, SECRET, timeout_s=2.0)
        try:
            for i in range(3):
                assert await push.send(BODY, f"n-{i}") == Attempt(status=503)
        finally:
            await push.close()
    assert len(peers) == 3
    assert len(set(peers)) == 1


async def test_connections_are_reused(gateway: FakeGateway, push: HttpPush) -> None:
    for i in range(5):
        await push.send(BODY, f"n-{i}")
    assert len({c.peer for c in gateway.calls}) == 1


async def test_close_leaves_nothing_unclosed(gateway: FakeGateway) -> None:
    push = HttpPush(gateway.url, SECRET)
    await push.send(BODY, "n-14")
    await push.close()
    await push.close()  # twice is harmless
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message)]


async def test_close_before_any_send() -> None:
    await HttpPush("http://127.0.0.1:9/push", SECRET).close()


async def test_a_send_after_close_opens_a_new_session(gateway: FakeGateway) -> None:
    push = HttpPush(gateway.url, SECRET)
    await push.send(BODY, "n-15")
    await push.close()
    try:
        assert await push.send(BODY, "n-16") == Attempt(status=200)
    finally:
        await push.close()


# --- the fake gateway itself ---------------------------------------------------------------


async def test_gateway_fail_until_then_ok(gateway: FakeGateway, push: HttpPush) -> None:
    gateway.fail_for(0.3, ("status", 503, {"Retry-After": "1"}))
    first = await push.send(BODY, "n-17")
    await asyncio.sleep(0.35)
    second = await push.send(BODY, "n-17")
    assert first == Attempt(status=503, retry_after_s=1.0)
    assert second == Attempt(status=200)


async def test_gateway_control_endpoints(gateway: FakeGateway) -> None:
    base = gateway.url.removesuffix("/push")
    async with aiohttp.ClientSession() as http:
        script = [["status", 410], "ok", ["hang", 0.01], ["status", 429, {"Retry-After": "7"}]]
        async with http.post(f"{base}/_control/script", json=script) as resp:
            assert resp.status == 200
        for _ in range(4):
            async with http.post(gateway.url, data=BODY) as resp:
                await resp.read()
        async with http.get(f"{base}/_control/calls") as resp:
            calls = await resp.json()
        assert [c["status"] for c in calls] == [410, 200, 200, 429]
        assert calls[0]["json"]["notification_id"] == "n-1"
        assert calls[0]["signature_valid"] is False
        assert calls[0]["signature_error"] == "signature-missing"
        async with http.post(f"{base}/_control/script", json=[["bogus"]]) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/_control/reset") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/_control/calls") as resp:
            assert await resp.json() == []


@pytest.mark.parametrize(
    "spec", ["nope", ["status"], ["status", 99], ["status", "500"], ["hang", -1], ["hang"]]
)
def test_gateway_refuses_unknown_behaviours(spec: object) -> None:
    with pytest.raises(ValueError, match="not a behaviour"):
        behaviour(spec)

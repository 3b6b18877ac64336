"""What the HTTP edge writes to the log: the access log (GEOFENCE_ACCESS_LOG) names route
templates, never a path, a query or a header; aiohttp's own error records keep no byte of
the request they could not parse."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.http.access_log import RouteAccessLogger, access_log_options, access_logger
from geofence.http.app import create_app
from tests.conftest import SDK_KEY, admin
from tests.json_logs import JsonLog

Client = TestClient[Any, Any]
RAW_ID = "9F1C-raw-device-id-4417"
BEARER = "SECRET-BEARER-5d1e"
# an oversized header holding a bearer; bad request lines holding a (percent-encoded) id
UNPARSABLE = [
    r.encode()
    for r in (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BEARER}-{'A' * 9000}\r\n\r\n",
        f"GET /v1/devices/{RAW_ID.replace('-', '%2D')} HTTP/1.1 junk\r\nHost: x\r\n\r\n",
        f"GET /v1/devices/{RAW_ID}?t={BEARER} HTTP/9.9\r\nHost: x\r\n\r\n",
    )
]
SECRETS = (BEARER, RAW_ID, "%2D", "9F1C", "junk")


async def served(aiohttp_client: Any, settings: Settings) -> Client:
    """A client of the app served as ``geofence serve`` serves it (its access log options)."""
    server = TestServer(create_app(settings, store=MemoryStore()))
    await server.start_server(**access_log_options(settings))
    client: Client = await aiohttp_client(server)
    return client


async def raw_answer(host: str, port: int, request: bytes) -> bytes:
    """The first bytes of the answer to ``request``, sent as is on a new connection."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(1024)
    writer.close()
    await writer.wait_closed()
    return answer


def test_access_log_is_off_unless_asked_for() -> None:
    assert access_log_options(Settings())["access_log"] is None
    on = access_log_options(Settings(access_log=True))
    assert on == {"access_log_class": RouteAccessLogger, "access_log": access_logger}


async def test_access_log_names_the_route_not_the_path_query_or_headers(
    aiohttp_client: Any, settings: Settings, json_log: JsonLog
) -> None:
    client = await served(aiohttp_client, settings.replace(access_log=True))
    secret_headers = {"Authorization": f"Bearer {BEARER}", "X-Trace": RAW_ID}
    body = {"device_id": RAW_ID, "consent": {"location": True, "offers": True}}
    registered = await client.post(
        "/v1/devices", json=body, headers={"Authorization": f"Bearer {SDK_KEY}"}
    )
    assert registered.status == 201
    await client.get(f"/v1/devices/{RAW_ID}/export?token={BEARER}", headers=admin())
    await client.get(f"/v1/devices/{RAW_ID}/export", headers=secret_headers)
    await client.get(f"/no/such/{RAW_ID}?q={RAW_ID}", headers=secret_headers)
    await client.request("PROPFIND", f"/v1/devices/{RAW_ID}")
    await client.request("BREW", f"/v1/devices/{RAW_ID}")  # not even parsed
    requests = json_log.of("geofence.access")
    assert [(r["method"], r["route"], r["status"]) for r in requests] == [
        ("POST", "/v1/devices", 201),
        ("GET", "/v1/devices/{device_id}/export", 200),
        ("GET", "/v1/devices/{device_id}/export", 401),
        ("GET", "unmatched", 404),
        ("other", "unmatched", 405),
        ("other", "unmatched", 400),
    ]
    assert all(r["message"] == "request" and r["level"] == "INFO" for r in requests)
    assert all(r["bytes"] > 0 and r["duration_ms"] >= 0 for r in requests)
    for secret in (RAW_ID, BEARER, SDK_KEY, "token=", "X-Trace", "PROPFIND", "BREW"):
        assert secret not in json_log.text


async def test_no_access_log_by_default(
    aiohttp_client: Any, settings: Settings, json_log: JsonLog
) -> None:
    client = await served(aiohttp_client, settings)
    assert (await client.get("/healthz")).status == 200
    assert json_log.of("geofence.access") == []


async def test_aiohttp_error_records_carry_no_request_bytes(
    aiohttp_client: Any, settings: Settings, json_log: JsonLog
) -> None:
    client = await served(aiohttp_client, settings)
    assert client.port is not None
    for request in UNPARSABLE:
        answer = await raw_answer(client.host, client.port, request)
        assert answer.startswith(b"HTTP/1.")
        assert b" 400 " in answer.split(b"\r\n")[0]
    for secret in (*SECRETS, "127.0.0.1"):
        assert secret not in json_log.text
    for record in json_log.records():
        if record["logger"].startswith("aiohttp."):
            assert record["error"] in ("LineTooLong", "BadStatusLine", "BadHttpMessage")

"""The example gateway (examples/gateway_receiver.py) against ``geofence serve``: real
processes on loopback. A member walks into a store, the notification reaches the
receiver, checked by both signatures, the receiver's ``delivered`` receipt comes back and
``/v1/stats`` counts it; a push sent again is not delivered twice, a forged one refused."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from geofence.adapters.push_http import HttpPush
from tests.fakes.webhook import push_problems
from tests.system.cluster import ADMIN, SDK
from tools.processes import SERVE, Process, free_port, running, service_env, wait_http

RECEIVER = [sys.executable, "examples/gateway_receiver.py"]
PUSH_SECRET = "whsec_ZXhhbXBsZS1wdXNoLXNlY3JldA=="
GATEWAY_SECRET = "example-receipt-secret"
SECRETS = {"GEOFENCE_PUSH_SECRET": PUSH_SECRET, "GEOFENCE_GATEWAY_SECRET": GATEWAY_SECRET}
DEVICE_ID = "member-receiver-1"
INSIDE = (60.1774, 24.9495)  # Rautamies in stores.geojson
OUTSIDE = (60.1790, 24.9480)


class Deployment:
    def __init__(self, logs: Path) -> None:
        port, receiver_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.push_url = f"http://127.0.0.1:{receiver_port}/push"
        argv = [*RECEIVER, "--port", str(receiver_port), "--geofence-url", self.base]
        self.receiver = Process("receiver", argv, SECRETS, logs)
        env = service_env(port, push_url=self.push_url, push_timeout_s=2)
        self.service = Process("service", SERVE, {**env, **SECRETS}, logs)

    def delivered_lines(self) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.receiver.log().splitlines() if x.startswith("{")]
        return [line["delivered"] for line in lines]


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    d = Deployment(tmp_path)
    with running(d.receiver, d.service):
        d.receiver.start()
        d.service.start()
        await wait_http(d.push_url.replace("/push", "/healthz"))
        await wait_http(f"{d.base}/readyz")
        yield d


async def walk_in(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A member with a push token walks into the store: the notification it is made."""
    body = {
        "device_id": DEVICE_ID,
        "consent": {"location": True, "offers": True},
        "push_token": "apns-token-1",
    }
    async with session.post(f"{base}/v1/devices", json=body, headers=SDK) as resp:
        assert resp.status == 201, await resp.text()
        token = {"Authorization": f"Bearer {(await resp.json())['device_token']}"}
    offer: dict[str, object] = {"title": "Welcome", "body": "At {store_name}"}
    offer |= {"store_ids": ["osm-way-88777732"], "starts_at": 0, "ends_at": 4e9}
    async with session.put(f"{base}/v1/offers/welcome", json=offer, headers=ADMIN) as resp:
        assert resp.status == 201, await resp.text()
    now, answers = time.time(), []
    for (lat, lon), ago in [(OUTSIDE, 400), (INSIDE, 300), (INSIDE, 240), (INSIDE, 170)]:
        ping = {"device_id": DEVICE_ID, "lat": lat, "lon": lon, "accuracy_m": 8, "ts": now - ago}
        async with session.post(f"{base}/v1/pings", json=ping, headers=token) as resp:
            answers.append(await resp.json())
    [note] = answers[-1]["notifications"]
    return dict(note)


async def funnel(session: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with session.get(f"{base}/v1/stats?by=offer", headers=ADMIN) as resp:
        totals: dict[str, int] = (await resp.json())["totals"]
        return totals


async def until(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_notification_reaches_the_receiver_and_its_receipt_comes_back(
    deployment: Deployment,
) -> None:
    d = deployment
    async with aiohttp.ClientSession() as session:
        note = await walk_in(session, d.base)

        async def shown() -> bool:
            return bool(d.delivered_lines())

        await until(shown, f"never delivered: {d.receiver.log()[-2000:]}")

        async def counted() -> bool:
            return (await funnel(session, d.base))["delivered"] == 1

        await until(counted, f"no receipt counted: {d.service.log()[-2000:]}")
    [line] = d.delivered_lines()
    assert line["notification_id"] == note["notification_id"]
    assert line["title"] == "Welcome"
    assert line["created_at"] == note["created_at"]
    assert line["expires_at"].endswith("Z")  # pushed in RFC 3339, as the API answers
    assert line["device_ref"]
    assert line["device_ref"] != DEVICE_ID
    assert DEVICE_ID not in d.receiver.log()
    assert "apns-token-1" not in d.receiver.log()
    assert "receipt notification=" in d.receiver.log()


def signed_push(push_url: str, body: bytes, key: str, clock: float) -> dict[str, str]:
    return HttpPush(push_url, PUSH_SECRET, clock=lambda: clock).headers(body, key)


NOTE = {
    "notification_id": "n-replayed",
    "device_ref": "ref-1",
    "push_token": "tok-1",
    "offer_id": "welcome",
    "store_id": "osm-way-88777732",
    "title": "Welcome",
    "body": "At Rautamies",
    "created_at": "2026-12-06T18:30:00Z",
    "expires_at": "2026-12-06T19:30:00Z",
}


async def test_the_receiver_dedupes_and_refuses_what_is_not_signed(
    deployment: Deployment,
) -> None:
    d = deployment
    body = json.dumps(NOTE).encode()
    headers = signed_push(d.push_url, body, "n-replayed", time.time())
    assert push_problems(headers, body) == []
    stale = signed_push(d.push_url, body, "n-replayed", time.time() - 301)
    geofence_only = {k: v for k, v in headers.items() if not k.startswith("webhook-")}
    webhook_only = {k: v for k, v in headers.items() if k != "X-Geofence-Signature"}
    async with aiohttp.ClientSession() as session:
        answers = []
        for h, b in [
            (headers, body),
            (headers, body),  # the same push again: not delivered twice
            (headers, body.replace(b"Welcome", b"Welcome!")),
            (stale, body),
            ({"Idempotency-Key": "n-replayed"}, body),
            ({**geofence_only, "X-Geofence-Signature": "t=1,v1=" + "0" * 64}, body),
            ({**webhook_only, "webhook-id": "n-other"}, body),
        ]:
            async with session.post(d.push_url, data=b, headers=h) as resp:
                answers.append((resp.status, (await resp.json()).get("status")))
    assert answers == [(200, "delivered"), (200, "duplicate")] + [(401, None)] * 5
    assert [line["notification_id"] for line in d.delivered_lines()] == ["n-replayed"]

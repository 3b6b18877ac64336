"""Delivery over HTTP (contract §6): the app's dispatcher, receipts and dead letters."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import standardwebhooks
from aiohttp.test_utils import TestClient

from geofence.config import Settings
from geofence.domain.delivery import Attempt, sign
from geofence.domain.times import parse_time
from geofence.http.app import create_app
from geofence.ports import StateStore
from tests.conftest import admin
from tests.contract.test_delivery import ScriptedPush
from tests.http.test_offers_api import put_offer, walk_in
from tests.http.test_ops import assert_problem
from tests.http.test_pings_api import register

GATEWAY_SECRET = "gateway-secret"
Client = TestClient[Any, Any]


async def app_with(
    aiohttp_client: Any, store: StateStore, settings: Settings, *script: Attempt
) -> tuple[Client, ScriptedPush]:
    push = ScriptedPush(time.time, *script)
    changed = settings.replace(
        stores="stores.geojson", quiet_hours="off", gateway_secret=GATEWAY_SECRET
    )
    client = await aiohttp_client(create_app(changed, store=store, push=push))
    return client, push


async def a_notification(client: Client) -> str:
    await put_offer(client, "welcome")
    resp = await client.post(
        "/v1/devices",
        json={"device_id": "d1", "consent": {"location": True, "offers": True}, "push_token": "t"},
        headers={"Authorization": "Bearer test-sdk-key"},
    )
    token = (await resp.json())["device_token"]
    answers = await walk_in(client, token, "d1")
    [note] = answers[-1]["notifications"]
    return str(note["notification_id"])


async def pushed(aiohttp_client: Any, store: StateStore, settings: Settings) -> tuple[Client, str]:
    """The app, once it has pushed the notification of an entry: its id."""
    client, push = await app_with(aiohttp_client, store, settings)
    notification_id = await a_notification(client)
    await until(lambda: len(push.calls) == 1)
    return client, notification_id


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def signed(body: dict[str, Any], secret: str = GATEWAY_SECRET, t: float | None = None) -> Any:
    raw = msgspec.json.encode(body)
    stamp = int(time.time() if t is None else t)
    return {
        "data": raw,
        "headers": {
            "Content-Type": "application/json",
            "X-Geofence-Signature": sign(secret, raw, stamp),
        },
    }


async def test_the_app_delivers_what_an_entry_makes(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client, push = await app_with(aiohttp_client, store, settings)
    notification_id = await a_notification(client)
    await until(lambda: len(push.calls) == 1)
    [(_, sent_id, body)] = push.calls
    assert sent_id == notification_id
    assert body["push_token"] == "t"
    for _ in range(100):  # settled just after the send returns
        if await store.outbox_depth() == 0:
            break
        await asyncio.sleep(0.01)
    assert await store.outbox_depth() == 0


async def test_receipts_feed_the_funnel_once_each(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client, notification_id = await pushed(aiohttp_client, store, settings)
    for event in ("delivered", "delivered", "opened"):
        body = {"notification_id": notification_id, "event": event, "at": time.time()}
        resp = await client.post("/v1/receipts", **signed(body))
        assert resp.status == 200, await resp.text()
    stats = await (await client.get("/v1/stats?by=offer", headers=admin())).json()
    [row] = stats["rows"]
    assert (row["notifications"], row["delivered"], row["opened"], row["redeemed"]) == (1, 1, 1, 0)
    assert row["rates"]["opened_rate"] == 1.0


async def test_receipts_must_be_signed_and_fresh(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client, notification_id = await pushed(aiohttp_client, store, settings)
    body = {"notification_id": notification_id, "event": "delivered", "at": time.time()}
    good = signed(body)
    tampered = {**good, "data": good["data"].replace(b"delivered", b"delivereD")}
    stale = signed(body, t=time.time() - 301)
    wrong_key = signed(body, secret="not-the-secret")
    unsigned = {**good, "headers": {"Content-Type": "application/json"}}
    for attempt in (tampered, stale, wrong_key, unsigned):
        await assert_problem(await client.post("/v1/receipts", **attempt), 401)
    assert (await client.post("/v1/receipts", **good)).status == 200
    replayed = await client.post("/v1/receipts", **good)
    assert (await replayed.json())["status"] == "duplicate"
    unknown = signed({**body, "notification_id": "never-sent"})
    await assert_problem(await client.post("/v1/receipts", **unknown), 404)
    bad = signed({**body, "event": "clicked"})
    await assert_problem(await client.post("/v1/receipts", **bad), 422)


def webhook_signed(body: dict[str, Any], t: float | None = None) -> Any:
    """A receipt signed as a Standard Webhooks library signs (the secret's UTF-8 bytes)."""
    raw = msgspec.json.encode(body)
    moment = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    signature = standardwebhooks.Webhook(GATEWAY_SECRET.encode()).sign("msg-1", moment, raw)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg-1",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }
    return {"data": raw, "headers": headers}


async def test_receipts_may_be_signed_the_standard_webhooks_way(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client, notification_id = await pushed(aiohttp_client, store, settings)
    body = {"notification_id": notification_id, "event": "delivered", "at": "2026-12-06T18:30:00Z"}
    good = webhook_signed(body)
    tampered = {**good, "data": good["data"].replace(b"delivered", b"delivereD")}
    stale = webhook_signed(body, t=time.time() - 301)
    # X-Geofence-Signature, when present, is the one checked
    both = {**good, "headers": {**good["headers"], "X-Geofence-Signature": f"t=1,v1={'0' * 64}"}}
    for attempt in (tampered, stale, both):
        await assert_problem(await client.post("/v1/receipts", **attempt), 401)
    resp = await client.post("/v1/receipts", **good)
    assert resp.status == 200
    assert (await resp.json())["status"] == "recorded"


async def test_dead_letters_are_listed_and_retried(
    aiohttp_client: Any, store: StateStore, settings: Settings
) -> None:
    client, push = await app_with(aiohttp_client, store, settings, Attempt(status=400))
    notification_id = await a_notification(client)
    await until(lambda: len(push.calls) == 1)
    listed: dict[str, Any] = {}

    async def dead() -> list[Any]:
        nonlocal listed
        listed = await (await client.get("/v1/deadletters", headers=admin())).json()
        return list(listed["dead_letters"])

    for _ in range(100):
        if await dead():
            break
        await asyncio.sleep(0.02)
    [letter] = listed["dead_letters"]
    assert (letter["notification_id"], letter["reason"]) == (notification_id, "rejected")
    for name in ("at", "created_at", "expires_at"):  # RFC 3339, as every answer's times
        assert abs(parse_time(letter[name]) - time.time()) < 7200
        assert letter[name].endswith("Z")
    metrics = await (await client.get("/metrics")).text()
    assert 'geofence_dead_letters_total{reason="rejected"} 1.0' in metrics
    retry = await client.post(f"/v1/deadletters/{notification_id}/retry", headers=admin())
    assert retry.status == 202
    assert abs(parse_time((await retry.json())["due_at"]) - time.time()) < 60
    await until(lambda: len(push.calls) == 2)
    assert push.calls[1][1] == notification_id
    await assert_problem(
        await client.post(f"/v1/deadletters/{notification_id}/retry", headers=admin()), 404
    )
    await assert_problem(await client.get("/v1/deadletters?limit=0", headers=admin()), 422)
    token = await register(client, "d9")
    forbidden = await client.get("/v1/deadletters", headers={"Authorization": f"Bearer {token}"})
    await assert_problem(forbidden, 403)

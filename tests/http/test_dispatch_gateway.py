"""The dispatcher, the signed HTTP push and the fake gateway together, on short time scales.

Every push the gateway receives is held to the OpenAPI document's ``webhooks`` entry."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec

from geofence.adapters.push_http import HttpPush
from geofence.adapters.push_stdout import StdoutPush
from geofence.delivery import Dispatcher
from geofence.domain.delivery import RetryPolicy, verify_webhook
from geofence.domain.offers import Notification
from geofence.domain.times import format_time
from geofence.metrics import Metrics
from geofence.ports import StateStore
from tests.contract.store_builders import profile, visit_state
from tests.fakes import FakeGateway
from tests.fakes.webhook import body_problems

SECRET = "push-secret"
# contract §6, in its order
CONTRACT_FIELDS = [
    "notification_id",
    "device_ref",
    "push_token",
    "offer_id",
    "store_id",
    "title",
    "body",
    "created_at",
    "expires_at",
]


def fresh(nid: str, ttl_s: float = 60.0) -> Notification:
    now = time.time()
    return Notification(
        notification_id=nid,
        device_ref="ref1",
        offer_id="o1",
        store_id="a",
        title="Hi",
        body="B",
        created_at=now,
        expires_at=now + ttl_s,
    )


@asynccontextmanager
async def dispatching(
    store: StateStore, gateway: FakeGateway, *notes: Notification
) -> AsyncIterator[Dispatcher]:
    await store.create_device(profile(push_token="tok-1"))
    await store.save_state("ref1", visit_state(), 0, outbox=list(notes))
    push = HttpPush(gateway.url, SECRET, timeout_s=0.3)
    policy = RetryPolicy(base_s=0.1, cap_s=1.0, timeout_s=0.3)
    dispatcher = Dispatcher(store, push, Metrics(), policy=policy, idle_s=0.02, rand=lambda: 1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await push.close()
    # every push, retries included, is the one the OpenAPI document's webhooks entry shows
    assert [c.push_problems for c in gateway.calls if c.push_problems] == []


async def settled(store: StateStore) -> None:
    async with asyncio.timeout(10):
        while await store.outbox_depth():  # noqa: ASYNC110 - the store signals nothing: poll it
            await asyncio.sleep(0.02)


async def test_500s_then_200_delivered_once_with_growing_gaps(store: StateStore) -> None:
    async with FakeGateway(secret=SECRET) as gateway:
        gateway.fail_next(3, 500)
        async with dispatching(store, gateway, fresh("n1")):
            await settled(store)
    statuses = [c.status for c in gateway.calls]
    assert statuses == [500, 500, 500, 200]
    times = [c.at_monotonic for c in gateway.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < gaps[1] < gaps[2]  # 0.1, 0.2, 0.4 s
    assert all(c.signature_valid for c in gateway.calls)
    assert {c.header("Idempotency-Key") for c in gateway.calls} == {"n1"}


async def test_retry_after_is_honoured(store: StateStore) -> None:
    async with FakeGateway(secret=SECRET) as gateway:
        gateway.script(("status", 429, {"Retry-After": "1"}))
        async with dispatching(store, gateway, fresh("n1")):
            await settled(store)
    first, second = gateway.calls
    assert second.at_monotonic - first.at_monotonic >= 1.0


async def test_a_hang_times_out_is_retried_and_leaks_nothing(store: StateStore) -> None:
    before = len(asyncio.all_tasks())
    async with FakeGateway(secret=SECRET) as gateway:
        gateway.script(("hang", 5.0))
        async with dispatching(store, gateway, fresh("n1")):
            await settled(store)
        assert [c.status for c in gateway.calls] == [None, 200]  # the first was abandoned
        assert gateway.in_flight == 0
    assert len(asyncio.all_tasks()) == before


async def test_410_is_a_dead_letter_and_drops_the_token(store: StateStore) -> None:
    async with FakeGateway(secret=SECRET) as gateway:
        gateway.script(("status", 410))
        async with dispatching(store, gateway, fresh("n1")):
            await settled(store)
    assert [d.reason for d in await store.dead_letters(5)] == ["rejected"]
    device = await store.get_device("ref1")
    assert device is not None
    assert device.push_token is None
    assert len(gateway.calls) == 1


async def test_expiry_during_an_outage_is_never_sent_late(store: StateStore) -> None:
    note = fresh("n1", ttl_s=1.0)
    async with FakeGateway(secret=SECRET) as gateway:
        gateway.fail_for(5.0, ("status", 503))
        async with dispatching(store, gateway, note):
            await settled(store)
    assert gateway.calls
    assert all(c.at < note.expires_at for c in gateway.calls)
    assert [d.reason for d in await store.dead_letters(5)] == ["expired"]
    body = msgspec.json.decode(gateway.calls[0].body)
    assert body["push_token"] == "tok-1"
    assert body["notification_id"] == "n1"


async def test_the_pushed_body_is_the_contracts_with_rfc_3339_times(store: StateStore) -> None:
    note = fresh("n1")
    async with FakeGateway(secret=SECRET) as gateway, dispatching(store, gateway, note):
        await settled(store)
    [call] = gateway.calls
    assert list(call.json) == CONTRACT_FIELDS  # in the contract's order
    assert call.json["created_at"] == format_time(note.created_at)
    assert call.json["expires_at"] == format_time(note.expires_at)
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert verify_webhook(SECRET, headers, call.body, time.time()) == "n1"


async def test_the_stdout_line_is_the_pushed_body(store: StateStore) -> None:
    """Without a push URL the same body goes to stdout, one JSON line, times in RFC 3339."""
    stream = io.StringIO()
    note = fresh("n1")
    await store.create_device(profile(push_token="tok-1"))
    await store.save_state("ref1", visit_state(), 0, outbox=[note])
    assert await Dispatcher(store, StdoutPush(stream), Metrics()).drain_once() == 1
    [line] = stream.getvalue().splitlines()
    assert body_problems(line.encode()) == []
    assert json.loads(line)["created_at"] == format_time(note.created_at)

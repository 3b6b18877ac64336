"""The dispatcher against both stores, with a scripted push and a clock of the test's own.

Each case drives ``drain_once`` at chosen moments, so backoff, Retry-After and expiry are
checked exactly, without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from geofence.adapters.memory import MemoryStore
from geofence.delivery import Dispatcher
from geofence.domain.delivery import Attempt, RetryPolicy
from geofence.domain.errors import Unavailable
from geofence.metrics import Metrics
from geofence.ports import StateStore
from tests.contract.store_builders import notification, profile, visit_state
from tests.fakes.counted import Counted

CREATED = 1_000.0
EXPIRES = CREATED + 3_600


class ScriptedPush:
    """Answers from a script, then 200; records what was sent and when."""

    needs_token = True

    def __init__(self, clock: Callable[[], float], *script: Attempt) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    async def send(self, body: bytes, notification_id: str) -> Attempt:
        self.calls.append((self.clock(), notification_id, msgspec.json.decode(body)))
        return self.script.pop(0) if self.script else Attempt(status=200)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def failing(status: int | None = None, **kw: Any) -> Attempt:
    return Attempt(status=status, **kw)


async def setup(store: StateStore, *script: Attempt, rand: float = 1.0) -> tuple[Any, ...]:
    await store.create_device(profile(push_token="tok-1"))
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    clock = Clock(CREATED)
    push = ScriptedPush(clock, *script)
    metrics = Metrics()
    policy = RetryPolicy(base_s=1.0, cap_s=300.0)
    dispatcher = Dispatcher(store, push, metrics, policy=policy, clock=clock, rand=lambda: rand)
    return dispatcher, push, clock, metrics


async def drain_at(dispatcher: Dispatcher, clock: Clock, at: float) -> int:
    clock.now = at
    return await dispatcher.drain_once()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_5xx_for_a_while_then_delivered_once_with_growing_gaps(store: StateStore) -> None:
    dispatcher, push, clock, metrics = await setup(store, failing(500), failing(502), failing(503))
    moments = [CREATED]
    assert await drain_at(dispatcher, clock, CREATED) == 1
    for gap in (1.0, 2.0, 4.0):  # rand() = 1: the full backoff, doubling
        assert await drain_at(dispatcher, clock, moments[-1] + gap - 0.01) == 0
        assert await drain_at(dispatcher, clock, moments[-1] + gap) == 1
        moments.append(moments[-1] + gap)
    assert [t for t, _, _ in push.calls] == moments
    assert {nid for _, nid, _ in push.calls} == {"n1"}  # one id across every retry
    assert await store.outbox_depth() == 0
    assert await drain_at(dispatcher, clock, CREATED + 1_000) == 0
    assert sample(metrics, "geofence_deliveries_total") == 1
    assert sample(metrics, "geofence_delivery_retries_total", cause="http-500") == 1


async def test_the_body_is_the_contracts(store: StateStore) -> None:
    dispatcher, push, clock, _ = await setup(store)
    await drain_at(dispatcher, clock, CREATED)
    [(_, _, body)] = push.calls
    assert body == {
        "notification_id": "n1",
        "device_ref": "ref1",
        "push_token": "tok-1",
        "offer_id": "o1",
        "store_id": "a",
        "title": "Hi",
        "body": "At Store a",
        "created_at": "1970-01-01T00:16:40Z",  # CREATED, in RFC 3339 as every answer
        "expires_at": "1970-01-01T01:16:40Z",
    }


async def test_never_sooner_than_retry_after(store: StateStore) -> None:
    dispatcher, push, clock, _ = await setup(store, failing(429, retry_after_s=7.0), rand=0.0)
    await drain_at(dispatcher, clock, CREATED)
    assert await drain_at(dispatcher, clock, CREATED + 6.99) == 0
    assert await drain_at(dispatcher, clock, CREATED + 7.0) == 1
    assert [t for t, _, _ in push.calls] == [CREATED, CREATED + 7.0]


@pytest.mark.parametrize("error", ["timeout", "connection"])
async def test_network_failures_are_retried(store: StateStore, error: str) -> None:
    dispatcher, push, clock, metrics = await setup(store, failing(error=error))
    await drain_at(dispatcher, clock, CREATED)
    await drain_at(dispatcher, clock, CREATED + 1.0)
    assert len(push.calls) == 2
    assert await store.outbox_depth() == 0
    assert sample(metrics, "geofence_delivery_retries_total", cause=error) == 1


async def test_410_dead_letters_and_drops_the_push_token(store: StateStore) -> None:
    dispatcher, push, clock, metrics = await setup(store, failing(410))
    await drain_at(dispatcher, clock, CREATED)
    [letter] = await store.dead_letters(10)
    assert (letter.item.id, letter.reason) == ("n1", "rejected")
    device = await store.get_device("ref1")
    assert device is not None
    assert device.push_token is None
    assert sample(metrics, "geofence_dead_letters_total", reason="rejected") == 1
    assert await drain_at(dispatcher, clock, CREATED + 100) == 0
    assert len(push.calls) == 1


async def test_other_4xx_dead_letters_and_keeps_the_token(store: StateStore) -> None:
    dispatcher, _, clock, _ = await setup(store, failing(400))
    await drain_at(dispatcher, clock, CREATED)
    assert [d.reason for d in await store.dead_letters(10)] == ["rejected"]
    device = await store.get_device("ref1")
    assert device is not None
    assert device.push_token == "tok-1"


async def test_an_outage_past_expiry_is_never_sent_late(store: StateStore) -> None:
    outage = [failing(503)] * 50
    dispatcher, push, clock, _ = await setup(store, *outage)
    t = CREATED
    while t < EXPIRES + 600:
        await drain_at(dispatcher, clock, t)
        t += 30.0
    assert push.calls
    assert all(when < EXPIRES for when, _, _ in push.calls)
    assert [d.reason for d in await store.dead_letters(10)] == ["expired"]
    assert await store.outbox_depth() == 0


async def test_an_expired_item_is_not_sent(store: StateStore) -> None:
    dispatcher, push, clock, _ = await setup(store)
    await drain_at(dispatcher, clock, EXPIRES)
    assert push.calls == []
    assert [d.reason for d in await store.dead_letters(10)] == ["expired"]


async def test_consent_is_checked_again_before_sending(store: StateStore) -> None:
    """A notification queued before its device withdrew consent to offers is neither sent
    nor kept as a dead letter: the withdrawal erases the device's notifications."""
    dispatcher, push, clock, _ = await setup(store)
    withdrawn = profile(push_token="tok-1", consent={"location": True, "offers": False})
    await store.put_device(withdrawn)
    await drain_at(dispatcher, clock, CREATED)
    assert push.calls == []
    assert await store.dead_letters(10) == []
    assert await store.outbox_depth() == 0


async def test_no_push_token_is_a_dead_letter(store: StateStore) -> None:
    dispatcher, push, clock, _ = await setup(store)
    await store.put_device(profile())
    await drain_at(dispatcher, clock, CREATED)
    assert push.calls == []
    assert [d.reason for d in await store.dead_letters(10)] == ["no-push-token"]


async def test_an_erased_device_gets_nothing_and_leaves_nothing(store: StateStore) -> None:
    dispatcher, push, _, _ = await setup(store)
    [item] = await store.claim_outbox(CREATED, 30, 10)  # claimed, then the device goes
    await store.erase_device("ref1")
    await dispatcher.deliver(item)
    assert push.calls == []
    assert await store.dead_letters(10) == []
    assert await store.outbox_depth() == 0


async def test_a_claimer_that_died_is_taken_over_after_its_lease(store: StateStore) -> None:
    dispatcher, push, clock, _ = await setup(store)
    await store.claim_outbox(CREATED, dispatcher.lease_s, 10)  # claimed, never settled
    assert await drain_at(dispatcher, clock, CREATED + dispatcher.lease_s - 1) == 0
    assert await drain_at(dispatcher, clock, CREATED + dispatcher.lease_s) == 1
    assert len(push.calls) == 1
    assert await store.outbox_depth() == 0


async def test_a_round_reads_its_profiles_and_expects_its_receipts_in_one_call_each(
    store: StateStore,
) -> None:
    """Notifications of four devices: one erased before the claim (its notification went
    with it), one that withdrew consent, two to send. The round makes one read of the
    profiles and one call for the receipts."""
    for ref in ("ref1", "ref2", "ref3", "ref4"):
        await store.create_device(profile(ref, push_token=f"tok-{ref}"))
        await store.save_state(ref, visit_state(), 0, outbox=[notification(f"n-{ref}", ref)])
    await store.erase_device("ref2")
    await store.put_device(profile("ref3", consent={"location": True, "offers": False}))
    counting = Counted(store)
    clock = Clock(CREATED)
    push = ScriptedPush(clock)
    dispatcher = Dispatcher(counting, push, Metrics(), clock=clock)
    assert await dispatcher.drain_once() == 3  # the erased device's went with it
    assert sorted(nid for _, nid, _ in push.calls) == ["n-ref1", "n-ref4"]
    assert await store.dead_letters(10) == []  # consent withdrawn: not kept either
    assert await store.outbox_depth() == 0
    assert (counting.calls["get_devices"], counting.calls["expect_receipts"]) == (1, 1)
    assert "get_device" not in counting.calls
    assert [r.notification_id for r in await _targets(store, "n-ref1", "n-ref4")] == [
        "n-ref1",
        "n-ref4",
    ]


async def _targets(store: StateStore, *notification_ids: str) -> list[Any]:
    """What each sent notification's first receipt counts against."""
    return [await store.record_receipt(nid, "opened", CREATED + 1) for nid in notification_ids]


class Outage(Counted):
    """A store whose outbox cannot be claimed for its first ``failures`` tries."""

    def __init__(self, store: StateStore, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    async def claim_outbox(self, now: float, lease_s: float, limit: int) -> list[Any]:
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("the state store is down")
        return await self.inner.claim_outbox(now, lease_s, limit)


async def test_after_an_outage_delivery_waits_at_most_the_backend_cap(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve failed claims in a row: the waits between them double from 1 s and stop at
    the backend's cap (3 s here), never the gateway's 300 s; the first claim that works
    sends the backlog, and the waits go back to the idle poll."""
    await store.create_device(profile(push_token="tok-1"))
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    push = ScriptedPush(Clock(CREATED))
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, backend_cap_s=3.0)
    outage = Outage(store, failures=12)
    dispatcher = Dispatcher(
        outage,
        push,
        Metrics(),
        policy=policy,
        idle_s=0.5,
        clock=Clock(CREATED + 1),
    )
    stop = asyncio.Event()
    waits: list[float] = []

    async def sleep(_: asyncio.Event, wait_s: float) -> None:
        waits.append(wait_s)
        if len(waits) == 14:
            stop.set()

    monkeypatch.setattr(dispatcher, "_sleep", sleep)
    await asyncio.wait_for(dispatcher.run(stop), 5.0)
    assert waits[:12] == [1.0, 2.0] + [3.0] * 10
    assert [n for _, n, _ in push.calls] == ["n1"]  # sent on the first claim that worked
    assert waits[12:] == [0.5, 1.0]  # idle again: the polls space out


async def test_idle_polls_space_out_to_the_bound_and_snap_back_when_items_come(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims that find nothing: the waits double from ``idle_s`` up to ``idle_max_s``;
    a claim that finds items (another worker's, written without a wake here) sends them
    and the waits start again from ``idle_s``. The outbox depth is read once per
    ``depth_every_s`` of the clock, not once per claim."""
    await store.create_device(profile(push_token="tok-1"))
    clock = Clock(CREATED)
    push = ScriptedPush(clock)
    counting = Counted(store)
    dispatcher = Dispatcher(
        counting, push, Metrics(), idle_s=0.5, idle_max_s=5.0, depth_every_s=5.0, clock=clock
    )
    stop = asyncio.Event()
    waits: list[float] = []

    async def sleep(_: asyncio.Event, wait_s: float) -> bool:
        waits.append(wait_s)
        clock.now += wait_s
        if len(waits) == 7:  # written by another worker: no wake
            await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
        if len(waits) == 10:
            stop.set()
        return False

    monkeypatch.setattr(dispatcher, "_sleep", sleep)
    await asyncio.wait_for(dispatcher.run(stop), 5.0)
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 0.5, 1.0, 2.0]
    assert [n for _, n, _ in push.calls] == ["n1"]
    assert counting.calls["claim_outbox"] == 11
    # claims at 0, 0.5, 1.5, 3.5, 7.5, 12.5, 17.5, 22.5 (n1), 22.5, 23 and 24 s:
    # the depth read at the first, then whenever 5 s had passed
    assert counting.calls["outbox_depth"] == 5


async def test_a_wake_snaps_the_idle_poll_back(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher(store, ScriptedPush(Clock(CREATED)), Metrics(), clock=Clock(CREATED))
    stop = asyncio.Event()
    waits: list[float] = []

    async def sleep(_: asyncio.Event, wait_s: float) -> bool:
        waits.append(wait_s)
        if len(waits) == 6:
            stop.set()
        return len(waits) == 4  # woken in the fourth wait

    monkeypatch.setattr(dispatcher, "_sleep", sleep)
    await asyncio.wait_for(dispatcher.run(stop), 5.0)
    assert waits == [0.5, 1.0, 2.0, 4.0, 0.5, 1.0]


@pytest.mark.parametrize("during_claim", [False, True])
async def test_a_wake_delivers_at_once_however_long_the_idle_poll(
    store: StateStore, during_claim: bool
) -> None:
    """Idle polls of 60 s: a notification written with a wake goes out at once, whether
    the wake comes while the dispatcher waits or while its claim (finding nothing yet) is
    under way."""
    await store.create_device(profile(push_token="tok-1"))
    push = ScriptedPush(Clock(CREATED))
    claimed = asyncio.Event()

    class Racing(Counted):
        async def claim_outbox(self, now: float, lease_s: float, limit: int) -> list[Any]:
            items = await self.inner.claim_outbox(now, lease_s, limit)
            if during_claim and not claimed.is_set():  # written and woken as it answers
                await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
                dispatcher.wake()
            claimed.set()
            return items

    dispatcher = Dispatcher(
        Racing(store), push, Metrics(), idle_s=60.0, idle_max_s=60.0, clock=lambda: CREATED
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.wait_for(claimed.wait(), 5.0)
        if not during_claim:
            await asyncio.sleep(0.05)  # waiting its 60 s now
            await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
            dispatcher.wake()
        async with asyncio.timeout(5.0):
            while not push.calls:  # noqa: ASYNC110 - the push records, signals nothing
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5.0)
    assert [n for _, n, _ in push.calls] == ["n1"]


def test_an_idle_wait_ends_at_the_dispatchers_own_earliest_retry() -> None:
    """Backed off to 5 s, a dispatcher that set a retry 0.3 s ahead waits 0.3 s, not 5;
    once that retry is due, the idle waits are the backed-off ones again."""
    clock = Clock(CREATED)
    dispatcher = Dispatcher(MemoryStore(), ScriptedPush(clock), Metrics(), clock=clock)
    assert dispatcher._until_retry(5.0) == 5.0  # noqa: SLF001 - the wait rule itself
    dispatcher._retry_at = CREATED + 0.3  # noqa: SLF001 - as a retry sets it
    assert dispatcher._until_retry(5.0) == pytest.approx(0.3)  # noqa: SLF001 - the wait rule itself
    clock.now += 0.3
    assert dispatcher._until_retry(5.0) == 5.0  # noqa: SLF001 - the wait rule itself

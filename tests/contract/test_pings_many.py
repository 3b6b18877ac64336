"""Many devices' pings at once (``handle_many``) answer exactly as each device alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.domain.errors import NotFound
from geofence.domain.model import DeviceState, Ping
from geofence.domain.offers import Offer
from geofence.engine.index import FenceIndex
from geofence.metrics import Metrics
from geofence.ports import Saved, StateStore, StateWrite
from geofence.service import pings as pings_service
from geofence.service.pings import PingService
from tests.conftest import REDIS_URL
from tests.contract.test_pings_service import T0, at, events_of, pipeline
from tests.fakes.counted import Counted

DEVICES = ("d0", "d1", "d2")

step = st.tuples(
    st.sampled_from(DEVICES),
    st.floats(-80, 180),
    st.floats(-40, 140),
    st.integers(1, 300),
    st.sampled_from([5.0, 40.0, 120.0]),
)


def batches_of(steps: list[tuple[str, float, float, int, float]], size: int) -> list[Any]:
    """The steps as pings with growing ts, cut into batches of ``size``; in a batch, each
    run of one device's pings is a group, so a device can come in several groups."""
    t = T0
    pings: list[tuple[str, Ping]] = []
    for device, x, y, dt, accuracy in steps:
        t += dt
        pings.append((device, at(x, y, t, accuracy)))
    out = []
    for start in range(0, len(pings), size):
        groups: list[tuple[str, list[Ping]]] = []
        for device, ping in pings[start : start + size]:
            if groups and groups[-1][0] == device:
                groups[-1][1].append(ping)
            else:
                groups.append((device, [ping]))
        out.append(groups)
    return out


def offer(offer_id: str, store_id: str, **more: Any) -> Offer:
    return Offer(
        id=offer_id, title="T", body="B", store_ids=(store_id,), starts_at=0, ends_at=4e9, **more
    )


async def offering(store: StateStore, *refs: str, offers: tuple[Offer, ...]) -> PingService:
    """The pipeline with ``offers`` on sale and no quiet hours."""
    for o in offers:
        await store.put_offer(o)
    service = await pipeline(store, *refs)
    service.offers.rules = Settings(quiet_hours="off").offer_rules
    return service


# a device may get each twice, ten minutes apart: plans depend on the device's ledger
UNBUDGETED = (
    offer("oa", "a", per_device_limit=2, per_device_cooldown_s=600),
    offer("ob", "b", per_device_limit=2, per_device_cooldown_s=600),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=40), size=st.integers(1, 12))
@pytest.mark.parametrize("as_arrays_from", [0, pings_service.SCREEN_AS_ARRAYS_FROM])
async def test_a_batch_of_devices_answers_as_each_device_alone(
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    as_arrays_from: int,
    steps: list[tuple[str, float, float, int, float]],
    size: int,
) -> None:
    """The same results, states, ledgers and outbox as group by group, entries and their
    offers included (each batch handled as it would arrive, in time), whether the batch
    is screened as arrays or ping after ping."""
    monkeypatch.setattr(pings_service, "SCREEN_AS_ARRAYS_FROM", as_arrays_from)
    refs = {d: f"{d}-{uuid.uuid4().hex}" for d in DEVICES}  # the store outlives an example
    alone_store = MemoryStore()
    alone = await offering(alone_store, *refs.values(), offers=UNBUDGETED)
    together = await offering(store, *refs.values(), offers=UNBUDGETED)
    queued = await store.outbox_depth()
    for batch in batches_of(steps, size):
        now = max(p.ts for _, pings in batch for p in pings) + 1
        groups = [(refs[device], pings) for device, pings in batch]
        expected = [await alone.handle(ref, pings, now=now) for ref, pings in groups]
        assert await together.handle_many(groups, now=now) == expected
    for ref in refs.values():
        mine, theirs = await store.load_state(ref), await alone_store.load_state(ref)
        assert (mine.state, mine.ledger) == (theirs.state, theirs.ledger)
    assert await store.outbox_depth() - queued == await alone_store.outbox_depth()


ENTERING = [at(20, 50, T0), at(20, 50, T0 + 130)]  # dwells in store a: one entry


async def test_devices_entering_together_share_one_read_and_one_write() -> None:
    store = Counted(MemoryStore())
    service = await offering(store, "e1", "e2", "e3", offers=UNBUDGETED)
    store.calls.clear()
    answers = await service.handle_many([(r, ENTERING) for r in ("e1", "e2", "e3")], now=T0 + 131)
    assert [len(a[1].notifications) for a in answers if isinstance(a, list)] == [1, 1, 1]
    assert store.calls == {
        "load_states": 1,
        "get_devices": 1,
        "list_offers": 1,
        "budget_spent": 1,
        "save_states": 1,
        "add_counts": 1,
        "remember_eligible": 1,  # the entries an offer was chosen on, kept for attribution
    }


async def test_devices_entering_together_never_overspend_a_budget(store: StateStore) -> None:
    """Three devices enter at once for an offer with two units: the first two named get it."""
    refs = [f"b{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    service = await offering(store, *refs, offers=(offer("o2", "a", budget=2),))
    answers = await service.handle_many([(r, ENTERING) for r in refs], now=T0 + 131)
    assert [len(a[1].notifications) for a in answers if isinstance(a, list)] == [1, 1, 0]
    assert await store.budget_spent(["o2"]) == {"o2": 2}
    assert await store.outbox_depth() == 2


async def test_an_entry_whose_write_loses_gives_its_unit_back_and_is_redone() -> None:
    store = Interleaved()
    service = await offering(store, "raced", offers=(offer("o1", "a", budget=1),))
    [results] = await service.handle_many([("raced", ENTERING)], now=T0 + 131)
    assert isinstance(results, list)
    assert len(results[1].notifications) == 1
    assert await store.budget_spent(["o1"]) == {"o1": 1}
    assert await store.outbox_depth() == 1


async def test_a_device_erased_before_its_entry_is_decided_fails_alone() -> None:
    class ErasedOnRead(MemoryStore):
        async def get_devices(self, refs: Any) -> Any:
            await self.erase_device("gone")
            return await super().get_devices(refs)

    store = ErasedOnRead()
    service = await offering(store, "gone", "kept", offers=(offer("o1", "a", budget=5),))
    gone, kept = await service.handle_many([("gone", ENTERING), ("kept", ENTERING)], now=T0 + 131)
    assert isinstance(gone, NotFound)
    assert isinstance(kept, list)
    assert len(kept[1].notifications) == 1
    assert await store.budget_spent(["o1"]) == {"o1": 1}


async def test_pings_of_one_device_out_of_order_come_back_in_the_order_given(
    store: StateStore,
) -> None:
    service = await pipeline(store, "a1", "a2")
    walk = [at(60, 50, T0 + 40), at(60, 50, T0), at(60, 50, T0 + 20), at(60, 50, T0 + 130)]
    [first, second] = await service.handle_many([("a1", walk), ("a2", walk[:1])], now=T0 + 200)
    assert isinstance(first, list)
    assert isinstance(second, list)
    assert events_of(first) == [
        {"type": "entry", "store_id": "b", "at": T0 + 40, "arrived_at": T0},
        {"type": "entry", "store_id": "a", "at": T0 + 130, "arrived_at": T0},
    ]
    assert [r.status for r in second] == ["accepted"]


async def test_a_device_named_twice_has_its_groups_applied_in_turn(store: StateStore) -> None:
    """The first group's pings make an entry; the second's, later, must not overtake them."""
    service = await pipeline(store, "twice")
    entering = [at(20, 50, T0), at(20, 50, T0 + 130)]
    staying = [at(20, 50, T0 + 200)]
    first, second = await service.handle_many(
        [("twice", entering), ("twice", staying)], now=T0 + 300
    )
    assert isinstance(first, list)
    assert isinstance(second, list)
    assert events_of(first) == [
        {"type": "entry", "store_id": "a", "at": T0 + 130, "arrived_at": T0}
    ]
    assert [r.status for r in first + second] == ["accepted"] * 3


async def test_a_device_named_twice_is_screened_from_where_its_first_group_left_it(
    store: StateStore,
) -> None:
    """A repeated ts is stale, and a move too fast from the first group's last fix is a
    jump, though neither is so from the state stored before the batch."""
    service = await pipeline(store, "repeats", "jumps")
    here, far_soon = at(0, 0, T0), at(5000, 0, T0 + 10)
    _, _, repeated, jumped = await service.handle_many(
        [("repeats", [here]), ("jumps", [here]), ("repeats", [here]), ("jumps", [far_soon])],
        now=T0 + 20,
    )
    assert isinstance(repeated, list)
    assert isinstance(jumped, list)
    assert [(r.status, r.reason) for r in repeated + jumped] == [
        ("ignored", "stale"),
        ("flagged", "jump"),
    ]


async def test_a_group_entering_and_leaving_has_its_distances_looked_up_before_the_rules(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store a group's first pings enter is measured for its later pings, in the band
    and outside, with the batch lookups (``_nears``): none is left to the rules, ping by
    ping, and the results are those of the device alone."""
    walk = [at(20, 50, T0), at(20, 50, T0 + 130), at(-15, 50, T0 + 160)]
    walk += [at(-80, 50, T0 + 200), at(-80, 50, T0 + 400)]
    alone = await pipeline(MemoryStore(), "walker")
    expected = await alone.handle("walker", walk, now=T0 + 401)
    assert [e["type"] for e in events_of(expected)] == ["entry", "exit"]
    together = await pipeline(store, "walker")
    looking_up = False
    nears, distance_m = PingService._nears, FenceIndex.distance_m

    def batch_lookups(*args: Any) -> Any:
        nonlocal looking_up
        looking_up = True
        try:
            return nears(*args)
        finally:
            looking_up = False

    def one_distance(*args: Any) -> float:
        assert looking_up, f"a distance looked up by the rules: {args[1:]}"
        return distance_m(*args)

    monkeypatch.setattr(PingService, "_nears", batch_lookups)
    monkeypatch.setattr(FenceIndex, "distance_m", one_distance)
    assert await together.handle_many([("walker", walk)], now=T0 + 401) == [expected]


async def test_an_erased_device_fails_alone(store: StateStore) -> None:
    service = await pipeline(store, "kept", "erased")
    await store.erase_device("erased")
    kept, erased = await service.handle_many(
        [("kept", [at(20, 50, T0)]), ("erased", [at(20, 50, T0)])], now=T0 + 10
    )
    assert isinstance(erased, NotFound)
    assert isinstance(kept, list)
    assert kept[0].status == "accepted"
    assert await store.device_keys("erased") == {}


class Interleaved(MemoryStore):
    """A store where another worker writes each device's state between load and save."""

    async def save_states(self, writes: Any) -> list[Saved]:
        for w in writes:
            stored = await self.load_state(w.ref)
            await self.save_state(w.ref, DeviceState(last_ts=T0 - 1), stored.version)
        return await super().save_states(writes)


async def test_a_write_that_loses_is_redone_from_the_fresh_state() -> None:
    store = Interleaved()
    service = await pipeline(store, "raced")
    [results] = await service.handle_many([("raced", [at(20, 50, T0)])], now=T0 + 10)
    assert isinstance(results, list)
    assert results[0].status == "accepted"
    state = (await store.load_state("raced")).state
    assert state.last_ts == T0
    assert set(state.visits) == {"a"}
    metrics = cast("Metrics", service.metrics)
    assert metrics.registry.get_sample_value("geofence_state_conflicts_total") == 1


@pytest.mark.parametrize("verdict", ["written", "conflict", "gone"])
async def test_save_states_reports_each_write(store: StateStore, verdict: str) -> None:
    await pipeline(store, "w1", "w2")
    before = await store.load_state("w1")
    if verdict == "conflict":
        await store.save_state("w1", DeviceState(last_ts=T0), before.version)
    if verdict == "gone":
        await store.erase_device("w1")
    writes = [
        StateWrite(ref="w1", state=DeviceState(last_ts=T0 + 1), version=before.version),
        StateWrite(ref="w2", state=DeviceState(last_ts=T0 + 2), version=0),
    ]
    assert await store.save_states(writes) == [verdict, "written"]
    assert (await store.load_states(["w2"]))[0].state.last_ts == T0 + 2


@pytest.mark.redis
async def test_a_redis_that_lost_its_scripts_is_given_them_again(redis_store_factory: Any) -> None:
    store = await redis_store_factory()
    refs = [f"flushed-{i}" for i in range(8)]  # spread over several shards
    await pipeline(store, *refs)
    await store.client.script_flush()
    stored = await store.load_states(refs)
    await store.client.script_flush()
    writes = [
        StateWrite(ref=ref, state=DeviceState(last_ts=T0), version=s.version)
        for ref, s in zip(refs, stored, strict=True)
    ]
    assert await store.save_states(writes) == ["written"] * len(refs)
    assert [s.state.last_ts for s in await store.load_states(refs)] == [T0] * len(refs)


@pytest.mark.redis
async def test_more_requests_than_connections_wait_for_one() -> None:
    """A burst larger than the pool queues for connections instead of failing."""
    store = RedisStore.from_url(REDIS_URL, max_connections=2, prefix=f"pool-{uuid.uuid4().hex}")
    try:
        loaded = await asyncio.gather(*(store.load_state(f"burst-{i}") for i in range(40)))
        assert [s.version for s in loaded] == [0] * 40
    finally:
        await store.close()


async def test_every_result_is_counted_once_by_its_verdict(store: StateStore) -> None:
    """Two calls, so the counters asked for in the first count again in the second."""
    service = await pipeline(store, "c1", "c2")
    first = [at(60, 50, T0), at(60, 50, T0 + 1)]
    await service.handle_many([("c1", first), ("c2", [at(60, 50, T0)])], now=T0 + 10)
    later = [at(60, 50, T0 + 2), at(60, 50, T0 + 2)]  # the second is stale
    await service.handle_many([("c1", later), ("c2", [at(60, 50, T0 - 5)])], now=T0 + 10)
    metrics = cast("Metrics", service.metrics)

    def counted(status: str, reason: str) -> float | None:
        labels = {"status": status, "reason": reason}
        return metrics.registry.get_sample_value("geofence_pings_total", labels)

    assert counted("accepted", "") == 4
    assert counted("ignored", "stale") == 2

"""Single pings handled together: each request answers as if it had been alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.adapters.memory import MemoryStore
from geofence.domain.callers import Caller
from geofence.domain.devices import Consent, DeviceProfile, Registration
from geofence.domain.errors import (
    BackendUnavailable,
    ConsentRequired,
    NotFound,
    Unauthorized,
    Unavailable,
)
from geofence.domain.model import Ping
from geofence.ports import Saved, StateStore, StateWrite, StoredState
from geofence.service.coalescer import MAX_FLUSH, PingCoalescer
from geofence.service.devices import DeviceService
from geofence.service.pings import PingResult, PingService
from tests.contract.test_pings_many import DEVICES, step
from tests.contract.test_pings_service import T0, at, pipeline

A, B, C = DEVICES
ANSWERED_WITHIN_S = 2.0  # a ping the coalescer lost would otherwise hang the test


class CountingStore(MemoryStore):
    """Counts the reads of profiles and states (calls that would be round trips), and
    can be switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0  # round trips that only read
        self.read_with_writes = 0  # reads that went in the round trip of a write
        self.down = False

    def _read(self, refs: Sequence[str]) -> None:
        self.reads += 1 if refs else 0  # nothing to read: no round trip
        if self.down:
            raise Unavailable("the state store is down")

    async def get_devices(self, refs: Sequence[str]) -> list[DeviceProfile | None]:
        self._read(refs)
        return await super().get_devices(refs)

    async def load_states(self, refs: Sequence[str]) -> list[StoredState]:
        self._read(refs)
        return await super().load_states(refs)

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        self._read(refs)
        return await super().load_devices(refs)

    async def save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        """One round trip: its read is not counted among the reads, but here."""
        self.read_with_writes += 1 if refs else 0
        if self.down:
            raise Unavailable("the state store is down")
        return await MemoryStore.save_states(self, writes), await MemoryStore.load_devices(
            self, refs
        )


class GatedStore(CountingStore):
    """Holds the next ``load_devices`` until let go, to add pings while a flush reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.go = asyncio.Event()
        self.gated = False

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        if self.gated:
            self.gated = False
            self.reading.set()
            await self.go.wait()
        return await super().load_devices(refs)


class HungStore(CountingStore):
    """Every read hangs, as on a Redis stopped with SIGSTOP, until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = asyncio.Event()
        self.go = asyncio.Event()

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        self.hung.set()
        await self.go.wait()
        return await super().load_devices(refs)


class YieldingStore(MemoryStore):
    """Lets the event loop run other tasks at every round trip, as a network store does."""

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        await asyncio.sleep(0)
        return await super().load_devices(refs)

    async def save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        await asyncio.sleep(0)
        return await super().save_then_load(writes, refs)


async def side(
    store: StateStore, *, location: bool = True
) -> tuple[PingCoalescer, dict[str, Caller]]:
    """A coalescer over ``store`` with DEVICES registered; each device's caller."""
    pings = await pipeline(store, "unused")
    devices = DeviceService("coalescer-test", store)
    callers = {}
    for device_id in DEVICES:
        consent = Consent(location=location, offers=True)
        _, token, _ = await devices.register(Registration(device_id=device_id, consent=consent))
        callers[device_id] = Caller("device", token)
    return PingCoalescer(devices, pings), callers


def ref_of(coalescer: PingCoalescer, device_id: str) -> str:
    return coalescer.devices.ref_of(device_id)


async def all_at_once(
    coalescer: PingCoalescer, callers: dict[str, Caller], pings: Sequence[tuple[str, Ping]]
) -> list[Any]:
    calls = [coalescer.handle(callers[d], d, ping) for d, ping in pings]
    return await asyncio.gather(*calls, return_exceptions=True)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=30), size=st.integers(1, 10))
async def test_pings_sent_together_answer_as_each_one_alone(
    steps: list[tuple[str, float, float, int, float]], size: int
) -> None:
    together, callers = await side(MemoryStore())
    alone = await pipeline(MemoryStore(), *(ref_of(together, d) for d in DEVICES))
    t, pings = T0, []
    for device, x, y, dt, accuracy in steps:
        t += dt
        pings.append((device, at(x, y, t, accuracy)))
    for start in range(0, len(pings), size):
        chunk = pings[start : start + size]
        now = together.pings.clock()
        expected = [await alone.handle(ref_of(together, d), [p], now=now) for d, p in chunk]
        assert await all_at_once(together, callers, chunk) == [r for [r] in expected]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(step, min_size=1, max_size=30),
    gaps=st.lists(st.integers(0, 3), min_size=30, max_size=30),
)
async def test_pings_arriving_while_others_are_handled_answer_as_each_one_alone(
    steps: list[tuple[str, float, float, int, float]], gaps: list[int]
) -> None:
    """Pings sent one after the other while earlier ones are in flight (``gaps``: turns
    of the event loop between two): flushes of every size, each next one read in the
    round trip of the write before it, answer as each ping handled alone in turn."""
    together, callers = await side(YieldingStore())
    alone = await pipeline(MemoryStore(), *(ref_of(together, d) for d in DEVICES))
    now = together.pings.clock()
    t, sent, expected = T0, [], []
    for (device, x, y, dt, accuracy), gap in zip(steps, gaps, strict=False):
        t += dt
        ping = at(x, y, t, accuracy)
        [result] = await alone.handle(ref_of(together, device), [ping], now=now)
        expected.append(result)
        sent.append(asyncio.ensure_future(together.handle(callers[device], device, ping)))
        for _ in range(gap):
            await asyncio.sleep(0)
    assert await asyncio.wait_for(asyncio.gather(*sent), ANSWERED_WITHIN_S) == expected


async def test_pings_waiting_when_a_flush_writes_are_read_in_its_round_trip() -> None:
    store = GatedStore()
    coalescer, callers = await side(store)
    store.gated = True
    before = store.reads
    first = [
        asyncio.ensure_future(coalescer.handle(callers[d], d, at(-500, 0, T0))) for d in DEVICES
    ]
    await store.reading.wait()  # the first flush is reading its devices
    second = [
        asyncio.ensure_future(coalescer.handle(callers[d], d, at(-500, 0, T0 + 1))) for d in DEVICES
    ]
    await asyncio.sleep(0)  # they wait for the next flush
    store.go.set()
    answers = await asyncio.wait_for(asyncio.gather(*first, *second), ANSWERED_WITHIN_S)
    assert [a.status for a in answers] == ["accepted"] * 2 * len(DEVICES)
    assert store.reads - before == 1  # the first flush's: the second made none of its own
    assert store.read_with_writes == 1  # it was read with the first one's write
    for d in DEVICES:  # and it saw that write: its pings were applied after the first
        assert (await store.load_state(ref_of(coalescer, d))).state.last_ts == T0 + 1


async def test_one_flush_reads_every_profile_and_state_at_once() -> None:
    store = CountingStore()
    coalescer, callers = await side(store)
    pings = [(d, at(-500, 0, T0 + i)) for i, d in enumerate(DEVICES * 20)]
    before = store.reads
    results = await all_at_once(coalescer, callers, pings)
    assert [r.status for r in results] == ["accepted"] * len(pings)
    assert store.reads - before == 1  # the profiles and the states together


async def test_refusals_are_per_request_and_the_rest_are_served() -> None:
    coalescer, callers = await side(MemoryStore())
    other = Caller("device", callers[B].token[:-2] + "xx")  # B's ref, a wrong secret
    calls = [
        coalescer.handle(callers[A], A, at(-500, 0, T0 + 1)),
        coalescer.handle(other, B, at(-500, 0, T0 + 1)),  # 401
        coalescer.handle(callers[B], A, at(-500, 0, T0 + 2)),  # another's device: 404
        coalescer.handle(callers[C], "nobody", at(-500, 0, T0 + 1)),  # 404
        coalescer.handle(callers[C], C, at(-500, 0, T0 + 1)),
    ]
    first, forged, elsewhere, unknown, last = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(first, PingResult)
    assert isinstance(last, PingResult)
    assert first.status == last.status == "accepted"
    assert isinstance(forged, Unauthorized)
    assert isinstance(elsewhere, NotFound)
    assert isinstance(unknown, NotFound)


async def test_no_location_consent_is_refused_and_stores_nothing() -> None:
    store = MemoryStore()
    coalescer, callers = await side(store, location=False)
    [answer] = await all_at_once(coalescer, callers, [(A, at(20, 50, T0))])
    assert isinstance(answer, ConsentRequired)
    assert (await store.load_state(ref_of(coalescer, A))).version == 0


async def test_an_outage_fails_its_flush_and_the_next_one_is_served() -> None:
    store = CountingStore()
    coalescer, callers = await side(store)
    store.down = True
    answers = await all_at_once(coalescer, callers, [(d, at(-500, 0, T0)) for d in DEVICES])
    assert all(isinstance(a, Unavailable) for a in answers)
    store.down = False
    answers = await all_at_once(coalescer, callers, [(d, at(-500, 0, T0)) for d in DEVICES])
    assert [a.status for a in answers] == ["accepted"] * len(DEVICES)


async def test_an_erased_device_gets_404_and_the_others_are_served() -> None:
    store = MemoryStore()
    coalescer, callers = await side(store)

    class ErasingPings(PingService):
        async def handle_many(self, groups: Any, **kw: Any) -> Any:
            await store.erase_device(ref_of(coalescer, B))  # between the check and the write
            return await super().handle_many(groups, **kw)

    pings = coalescer.pings
    coalescer.pings = ErasingPings(
        pings.rules, store, pings.catalogue, pings.metrics, offers=pings.offers, clock=pings.clock
    )
    answers = await all_at_once(coalescer, callers, [(d, at(-500, 0, T0)) for d in DEVICES])
    assert isinstance(answers[1], NotFound)
    assert answers[0].status == answers[2].status == "accepted"


async def test_a_request_that_went_away_does_not_stop_the_others() -> None:
    coalescer, callers = await side(MemoryStore())
    gone = asyncio.ensure_future(coalescer.handle(callers[A], A, at(-500, 0, T0)))
    kept = asyncio.ensure_future(coalescer.handle(callers[B], B, at(-500, 0, T0)))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await kept).status == "accepted"
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_more_than_a_flush_waiting_is_served_in_several() -> None:
    store = CountingStore()
    coalescer, callers = await side(store)
    pings = [(A, at(-500, 0, T0 + i)) for i in range(MAX_FLUSH + 5)]
    before = store.reads
    answers = await all_at_once(coalescer, callers, pings)
    assert [a.status for a in answers] == ["accepted"] * len(pings)
    assert store.reads - before == 1  # the first flush's read
    assert store.read_with_writes == 1  # the second's, with the first one's write


async def test_behind_a_hung_flush_each_ping_answers_503_at_its_own_deadline() -> None:
    """The store hangs in the first flush's read. Its ping, and one queued behind it,
    answer BackendUnavailable each at its own deadline, while the flush still hangs; the
    queued one, given up before any flush took it, is never applied; once the store
    answers again, pings are served."""
    store = HungStore()
    coalescer, callers = await side(store)
    coalescer.deadline_s = 0.2
    first = asyncio.ensure_future(coalescer.handle(callers[A], A, at(-500, 0, T0)))
    await store.hung.wait()
    await asyncio.sleep(0.1)  # half the deadline: the two run out one after the other
    queued = asyncio.ensure_future(coalescer.handle(callers[B], B, at(-500, 0, T0)))
    done, _ = await asyncio.wait([first], timeout=ANSWERED_WITHIN_S)
    assert done == {first}
    assert not queued.done()
    with pytest.raises(BackendUnavailable):
        first.result()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(queued, ANSWERED_WITHIN_S)
    assert not store.go.is_set()
    assert store.reads == 0
    store.go.set()
    later = await asyncio.wait_for(coalescer.handle(callers[C], C, at(-500, 0, T0)), 2.0)
    assert later.status == "accepted"
    assert (await store.load_state(ref_of(coalescer, B))).state.last_ts is None  # never applied
    assert (await store.load_state(ref_of(coalescer, C))).state.last_ts == T0

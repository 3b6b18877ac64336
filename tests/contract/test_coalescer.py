"""Single pings handled together: each request answers as if it had been alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.domain.callers import Caller
from geofence.domain.devices import Consent, DeviceProfile, Registration
from geofence.domain.errors import ConsentRequired, NotFound, Unauthorized, Unavailable
from geofence.domain.model import Ping
from geofence.ports import StateStore, StoredState
from geofence.service.coalescer import MAX_FLUSH, PingCoalescer
from geofence.service.devices import DeviceService
from geofence.service.pings import PingService
from tests.contract.test_pings_many import DEVICES, step
from tests.contract.test_pings_service import T0, at, pipeline

A, B, C = DEVICES


class CountingStore(MemoryStore):
    """Counts the reads of profiles and states (calls that would be round trips), and
    can be switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
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


async def side(
    store: StateStore, *, location: bool = True
) -> tuple[PingCoalescer, dict[str, Caller]]:
    """A coalescer over ``store`` with DEVICES registered; each device's caller."""
    pings = await pipeline(store, "unused")
    devices = DeviceService(Settings(stores="", id_secret="coalescer-test"), store)
    callers = {}
    for device_id in DEVICES:
        consent = Consent(location=location, offers=True)
        _, token = await devices.register(Registration(device_id=device_id, consent=consent))
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
    assert first.status == last.status == "accepted"
    assert isinstance(forged, Unauthorized)
    assert isinstance(elsewhere, NotFound) and isinstance(unknown, NotFound)


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
        pings.settings, store, pings.catalogue, pings.metrics, clock=pings.clock
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
    assert store.reads - before == 2  # a read for each flush

"""The ping pipeline over both stores: same events, and no double or lost events under races."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence import bootstrap
from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound, Unavailable
from geofence.domain.model import Fence, Ping
from geofence.domain.offers import Offer
from geofence.metrics import Metrics
from geofence.ports import StateStore
from geofence.service.pings import PingResult, PingService

# a 100 m x 100 m square shop in Helsinki, and a second one overlapping its east half
LAT0, LNG0 = 60.17, 24.94
M_LAT = 1 / 111_195.0
M_LNG = 1 / (111_195.0 * math.cos(math.radians(LAT0)))


def square(x0_m: float, size_m: float) -> dict[str, object]:
    x0, x1 = LNG0 + x0_m * M_LNG, LNG0 + (x0_m + size_m) * M_LNG
    y0, y1 = LAT0, LAT0 + size_m * M_LAT
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


FENCES = [
    Fence(id="a", geometry=square(0, 100)),
    Fence(id="b", geometry=square(50, 100), dwell_s=30),
]
T0 = 1_800_000_000.0


def at(x_m: float, y_m: float, t: float, accuracy_m: float = 10.0) -> Ping:
    return Ping(lat=LAT0 + y_m * M_LAT, lng=LNG0 + x_m * M_LNG, accuracy_m=accuracy_m, ts=t)


async def register(store: StateStore, ref: str) -> None:
    profile = DeviceProfile(ref=ref, token_hash="-", consent={"location": True, "offers": True})
    await store.create_device(profile)


async def pipeline(store: StateStore, *refs: str) -> PingService:
    cfg = Settings(stores="")
    await store.replace_catalogue(FENCES)
    for ref in refs or ("dev1",):
        await register(store, ref)
    metrics = Metrics()
    catalogue = bootstrap.catalogue_service(cfg, store, metrics)
    await catalogue.start()
    return bootstrap.ping_service(cfg, store, catalogue, metrics, clock=lambda: T0 + 10_000)


def events_of(results: Sequence[PingResult]) -> list[dict[str, object]]:
    return [msgspec.to_builtins(e) for r in results for e in r.events]


async def test_walk_in_dwell_and_leave(store: StateStore) -> None:
    pings = await pipeline(store)
    walk = [
        at(-200, 50, T0),
        at(20, 50, T0 + 60),
        at(25, 50, T0 + 120),
        at(30, 50, T0 + 180),
        at(-100, 50, T0 + 240),
        at(-150, 50, T0 + 300),
    ]
    results = await pings.handle("dev1", walk)
    assert [r.status for r in results] == ["accepted"] * 6
    assert events_of(results) == [
        {"type": "entry", "store_id": "a", "at": T0 + 180, "arrived_at": T0 + 60},
        {
            "type": "exit",
            "store_id": "a",
            "at": T0 + 300,
            "left_at": T0 + 240,
            "dwell_s": 180.0,
            "reason": "left",
        },
    ]


async def test_pings_are_taken_in_ts_order_and_answered_in_given_order(store: StateStore) -> None:
    pings = await pipeline(store)
    shuffled = [at(60, 50, T0 + 40), at(60, 50, T0), at(60, 50, T0 + 20)]
    results = await pings.handle("dev1", shuffled)
    assert [r.status for r in results] == ["accepted"] * 3
    # only store b (dwell 30 s) confirms, on the ping at T0 + 40, which was given first
    assert events_of(results[:1]) == [
        {"type": "entry", "store_id": "b", "at": T0 + 40, "arrived_at": T0}
    ]
    again = await pings.handle("dev1", [at(60, 50, T0 + 40)])
    assert (again[0].status, again[0].reason) == ("ignored", "stale")


async def test_state_survives_between_calls(store: StateStore) -> None:
    pings = await pipeline(store)
    await pings.handle("dev1", [at(20, 50, T0)])
    results = await pings.handle("dev1", [at(20, 50, T0 + 120)])
    assert [e["type"] for e in events_of(results)] == ["entry"]
    assert (await store.load_state("dev1")).state.last_entry_at == {"a": T0 + 120}


@pytest.mark.parametrize("many", [False, True], ids=["handle", "handle_many"])
async def test_a_store_reshaped_while_visited_closes_the_visit_and_starts_another(
    store: StateStore, many: bool
) -> None:
    pings = await pipeline(store)
    await pings.handle("dev1", [at(20, 50, T0), at(20, 50, T0 + 120)])  # entered "a"
    wider = Fence(id="a", geometry=square(0, 120), dwell_s=0)  # a new revision of "a"
    await store.replace_catalogue([wider, FENCES[1]])
    assert await pings.catalogue.refresh()
    ping = [at(20, 50, T0 + 180)]
    results = (
        (await pings.handle_many([("dev1", ping)]))[0] if many else await pings.handle("dev1", ping)
    )
    assert events_of(results) == [  # type: ignore[arg-type]
        {
            "type": "exit",
            "store_id": "a",
            "at": T0 + 180,
            "left_at": T0 + 120,
            "dwell_s": 120.0,
            "reason": "store_removed",
        },
    ]
    visit = (await store.load_state("dev1")).state.visits["a"]
    # the new visit has the new revision's dwell of 0 s: confirmed at once (in cooldown)
    assert (visit.arrived_at, visit.confirmed, visit.suppressed) == (T0 + 180, True, True)


async def test_concurrent_workers_emit_each_event_once(store: StateStore) -> None:
    """Two workers on one store get the same pings of one device at the same moment."""
    worker_1, worker_2 = await pipeline(store), await pipeline(store)
    sequence = [at(20, 50, T0 + 10 * i) for i in range(30)]
    emitted: list[dict[str, object]] = []
    for ping in sequence:
        both = await asyncio.gather(
            worker_1.handle("dev1", [ping]), worker_2.handle("dev1", [ping])
        )
        emitted += events_of([r for results in both for r in results])
    assert emitted == [{"type": "entry", "store_id": "a", "at": T0 + 120, "arrived_at": T0}]


moves = st.lists(
    st.tuples(
        st.floats(-80, 180),
        st.floats(-40, 140),
        st.integers(1, 400),
        st.sampled_from([5.0, 40.0, 120.0]),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=moves)
async def test_redis_store_agrees_with_memory_store(
    store: StateStore, steps: list[tuple[float, float, int, float]]
) -> None:
    """Random walks near two overlapping shops: the same answers from either store."""
    device = f"dev-{uuid.uuid4().hex}"  # the store outlives an example
    memory = await pipeline(MemoryStore(), device)
    other = await pipeline(store, device)
    t = T0
    for x, y, dt, accuracy in steps:
        t += dt
        ping = at(x, y, t, accuracy)
        expected = await memory.handle(device, [ping])
        assert await other.handle(device, [ping]) == expected
    assert (await store.load_state(device)).state == (await memory.store.load_state(device)).state


async def test_a_ping_racing_an_erasure_writes_nothing_back(store: StateStore) -> None:
    """The device is erased between reading its state and writing the new one."""
    pings = await pipeline(store)
    await pings.handle("dev1", [at(20, 50, T0)])
    stored = await store.load_state("dev1")
    await store.erase_device("dev1")
    with pytest.raises(NotFound):
        await store.save_state("dev1", stored.state, stored.version)
    with pytest.raises(NotFound):
        await pings.handle("dev1", [at(20, 50, T0 + 10)])
    assert await store.device_keys("dev1") == {}


class LandsThenFails(MemoryStore):
    """A store whose write lands but whose answer is lost, as on a Redis timeout."""

    async def save_state(self, *args: object, **kwargs: object) -> bool:
        await super().save_state(*args, **kwargs)  # type: ignore[arg-type]
        raise Unavailable("the answer was lost")


async def test_a_write_whose_answer_is_lost_keeps_its_budget_spent() -> None:
    store = LandsThenFails()
    await store.put_offer(
        Offer(id="o1", title="T", body="B", store_ids=("a",), starts_at=0, ends_at=4e9, budget=1)
    )
    service = await pipeline(store)
    now = T0 + 10_000
    service.offers.rules = Settings(quiet_hours="off").offer_rules
    with pytest.raises(Unavailable):
        await service.handle("dev1", [at(50, 50, now - 200), at(50, 50, now - 60)])
    # the write landed with its notification: the unit must stay spent, never be reused
    assert await store.outbox_depth() == 1
    assert await store.budget_spent(["o1"]) == {"o1": 1}

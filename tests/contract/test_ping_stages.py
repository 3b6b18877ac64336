"""The service's ``stages`` seam: what the benchmarks time, told by the service itself."""

from __future__ import annotations

from collections import Counter

from geofence.domain.errors import NotFound
from geofence.metrics import Metrics
from geofence.ports import StateStore
from geofence.service.pings import STAGES, PingService
from tests.contract.test_pings_service import T0, at, events_of, pipeline

WALK = [at(20, 50, T0), at(20, 50, T0 + 130), at(-15, 50, T0 + 160)]
WALK += [at(-80, 50, T0 + 200), at(-80, 50, T0 + 400)]


async def told_service(store: StateStore, told: list[tuple[str, float]]) -> PingService:
    """The pipeline's service, built again with a ``stages`` callback that keeps what
    it is told."""
    plain = await pipeline(store, "walker")
    return PingService(
        plain.rules,
        store,
        plain.catalogue,
        Metrics(),
        offers=plain.offers,
        clock=plain.clock,
        stages=lambda stage, seconds: told.append((stage, seconds)),
    )


async def test_each_stage_of_a_batch_is_told_once_with_its_cpu_time(store: StateStore) -> None:
    told: list[tuple[str, float]] = []
    service = await told_service(store, told)
    [results] = await service.handle_many([("walker", WALK)], now=T0 + 401)
    assert not isinstance(results, NotFound)
    assert [e["type"] for e in events_of(results)] == ["entry", "exit"]
    assert Counter(stage for stage, _ in told) == {
        "lookups": 1,  # every ping's in one vectorised call
        "rules": 1,  # the device's one group
        "entries": 1,
        "counts": 1,
    }
    assert all(seconds >= 0 for _, seconds in told)


async def test_a_timed_service_answers_as_an_untimed_one(store: StateStore) -> None:
    untimed = await pipeline(store, "walker")
    expected = await untimed.handle("walker", WALK, now=T0 + 401)
    await store.erase_device("walker")
    told: list[tuple[str, float]] = []
    timed = await told_service(store, told)
    assert await timed.handle("walker", WALK, now=T0 + 401) == expected
    assert {stage for stage, _ in told} == {"rules", "single-device way", "counts"}


async def test_without_stages_nothing_is_wrapped(store: StateStore) -> None:
    """The default costs nothing: the service's methods are its class's, unwrapped."""
    service = await pipeline(store, "walker")
    assert not set(STAGES) & set(vars(service))
    told: list[tuple[str, float]] = []
    timed = await told_service(store, told)
    assert set(STAGES) <= set(vars(timed))

"""Two `geofence serve` processes on one Redis, every device's pings split between them
(each ping to the other process, sent once the previous one is answered): the events are
the reference model's, as with one process, and the two dispatchers between them deliver
each notification exactly once."""

from __future__ import annotations

from tests.system.checker import (
    check_events,
    deliveries,
    entries_without_notification,
    privacy_problems,
    repeated_entries,
)
from tests.system.cluster import Cluster, generous_offer, put_offer, wait_delivered
from tests.system.load import Load, client_session, devices
from tests.system.walkers import Town, walkers

RATE = 200
PERIOD_S = 2.0
LOAD_S = 30.0
CLUSTER = {"services": 2}  # the module's deployment (tests/system/conftest.py)


async def test_two_processes_give_the_events_of_one(cluster: Cluster, town: Town) -> None:
    async with client_session() as session:
        await put_offer(session, cluster.urls[0], "welcome", generous_offer(town.ids))
        fleet = await devices(session, cluster.urls[1], walkers(town, 2 * RATE, label="t", seed=8))
        load = Load(session, cluster.urls, period_s=PERIOD_S, alternate=True)
        history = await load.run(fleet, LOAD_S)
        calls = await wait_delivered(session, cluster.gateway_url, history.notifications())
    report = deliveries(calls)
    model = check_events(history, town.index, cluster.settings)
    by_service = {url: len([a for a in history if a.target == url]) for url in cluster.urls}
    print(f"two services: pings={history.pings()} {history.summary()} {by_service}")
    print(f"model: pings={model.pings} events={dict(model.events)} calls={report.calls}")

    assert min(by_service.values()) >= history.pings() // 2 - len(fleet)
    assert model.mismatches == []
    assert model.undecided == []
    assert entries_without_notification(history) == []
    assert repeated_entries(history) == []
    assert set(history.notifications()) == report.delivered
    assert max(report.per_id.values()) == 1
    assert history.answers() == {"200": len(history)}

    assert privacy_problems(cluster, [d.device_id for d in fleet]) == []

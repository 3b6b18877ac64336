"""Steady load, a burst, and erasure under load, on one deployment (redis-server, the fake
gateway, one `geofence serve`); then what the logs and Redis hold about the devices.

Steady: 200 pings/s from 400 walkers for 60 s (10 min with --soak). Every ping is answered
without a 5xx, every one is acknowledged in the end, the events of the acknowledged pings
are exactly the reference model's, and every entry made one notification that the
gateway received once, under its own Idempotency-Key.
"""

from __future__ import annotations

import asyncio

from tests.system.checker import (
    check_events,
    deliveries,
    entries_without_notification,
    privacy_problems,
    repeated_entries,
    traces_of,
)
from tests.system.cluster import (
    Cluster,
    erase,
    generous_offer,
    ping_counts,
    put_offer,
    wait_delivered,
)
from tests.system.history import History, percentile
from tests.system.load import Load, client_session, devices, warm
from tests.system.walkers import Town, walkers

RATE = 200  # pings/s
PERIOD_S = 2.0  # one ping per device every 2 s: 400 devices
STEADY_S, SOAK_S = 60.0, 600.0
ERASED = 20  # walkers erased half-way through the steady load
BURST_RATE = 5 * RATE
BURST_S = 20.0
CALM_S = 10.0  # steady load before the burst
AFTER_S = 25.0  # steady load after it
ANSWER_S = 30.0  # what the clients wait for an answer during the burst
WINDOW_S = 5.0
RECOVERY_S = 15.0
BURST_CONNECTIONS = 400


async def test_steady_load_gives_the_reference_models_events(
    cluster: Cluster, town: Town, device_ids: set[str], soak: bool
) -> None:
    duration_s = SOAK_S if soak else STEADY_S
    url = cluster.urls[0]
    async with client_session() as session:
        await put_offer(session, url, "welcome", generous_offer(town.ids))
        fleet = await devices(session, url, walkers(town, int(RATE * PERIOD_S), label="w", seed=1))
        erased = await devices(session, url, walkers(town, ERASED, label="gone", seed=2))
        device_ids.update(d.device_id for d in fleet + erased)
        before = await ping_counts(session, url)
        load = Load(session, [url], period_s=PERIOD_S)
        run = asyncio.create_task(load.run(fleet + erased, duration_s))
        await load.at(duration_s / 2)
        for i, d in enumerate(erased):  # with its own token or the admin key, alternately
            await erase(session, url, d.device_id, d.token if i % 2 else None)
        history = await run
        after = await ping_counts(session, url)
        expected = set(history.notifications())
        calls = await wait_delivered(session, cluster.gateway_url, expected)
    gone = {d.device_id for d in erased}
    ours = History([a for a in history if a.device_id not in gone])
    print(f"steady {duration_s:.0f}s: pings={history.pings()} {history.summary()}")

    model = check_events(ours, town.index, cluster.settings)
    print(f"model: pings={model.pings} events={dict(model.events)}")
    assert model.mismatches == []
    assert model.undecided == []
    assert model.pings == ours.pings()
    assert model.events["entry"] > 0
    assert model.events["exit/left"] > 0

    assert entries_without_notification(ours) == []
    assert repeated_entries(history) == []
    report = deliveries(calls)
    ours_ids = {n for n, (d, _) in history.notifications().items() if d not in gone}
    print(f"notifications: made={len(expected)} calls={report.calls}")
    assert ours_ids <= report.delivered
    assert max(report.per_id.values()) == 1  # no fault: each sent exactly once

    with cluster.redis.client() as client:
        for d in erased:
            assert traces_of(client, cluster.prefix, cluster.ref(d.device_id)) == []

    # every acknowledged ping was counted once by the service (and nothing else was)
    assert sum(after.values()) - sum(before.values()) == sum(a.acked for a in history)
    # no 5xx, no 429, no answer missing; on a machine too busy to keep up (CI shares it),
    # a few pings may be shed at once as overloaded, which the model above already allows
    answers = ours.answers()
    shed = answers.pop("503 /problems/overloaded", 0)
    assert answers == {"200": len(ours) - shed}, answers
    assert shed <= 0.01 * len(ours), answers
    assert all(a.status in (200, 401, 404) for a in history if a.device_id in gone)


async def test_pings_at_once_are_not_refused_for_want_of_redis_connections(
    cluster: Cluster, town: Town, device_ids: set[str]
) -> None:
    """200 pings at the same moment, fewer than the service admits at once (its in-flight
    cap): Redis is up, so none may be refused as if it were down.

    This once failed: redis-py's default pool (100 connections) raises MaxConnectionsError
    rather than wait, which the store turned into 503 ``unavailable`` with Redis idle;
    under steady load it showed as a few 503s whenever answers slowed down.
    """
    url = cluster.urls[0]
    async with client_session() as session:
        fleet = await devices(session, url, walkers(town, 200, label="c", seed=5))
        device_ids.update(d.device_id for d in fleet)
        history = await Load(session, [url], period_s=1.0).once(fleet)
    answers = history.answers()
    print(f"200 at once: {dict(answers)}")
    assert "503 /problems/backend-unavailable" not in answers, answers


async def test_burst_is_shed_and_latency_recovers(
    cluster: Cluster, town: Town, device_ids: set[str]
) -> None:
    """5x the load for 20 s, from 800 more devices pinging once a second beside the steady
    400, through a pool of ``BURST_CONNECTIONS`` connections opened ahead: every answer is
    200, 429 or 503, with Retry-After when not 200; and within ``RECOVERY_S`` of the
    burst's last answer, the steady load has a window of a few seconds all answered 200
    at a p99 back near its calm one."""
    url = cluster.urls[0]
    async with client_session() as session, client_session(BURST_CONNECTIONS) as pool:
        await put_offer(session, url, "welcome", generous_offer(town.ids))
        steady_fleet = await devices(session, url, walkers(town, RATE * 2, label="s", seed=3))
        burst_fleet = await devices(
            session, url, walkers(town, BURST_RATE - RATE, label="b", seed=4)
        )
        device_ids.update(d.device_id for d in steady_fleet + burst_fleet)
        await warm(session, url, len(steady_fleet))
        await warm(pool, url, BURST_CONNECTIONS)
        steady = Load(session, [url], period_s=PERIOD_S, timeout_s=ANSWER_S)
        burst = Load(pool, [url], period_s=1.0, retry=False, timeout_s=ANSWER_S)
        run = asyncio.create_task(steady.run(steady_fleet, CALM_S + BURST_S + AFTER_S))
        await steady.at(CALM_S)
        await burst.run(burst_fleet, BURST_S)
        burst_over = max(a.done for a in burst.history)
        history = await run
    calm = history.between(steady.started, burst.started)
    limit_s = max(1.0, 3 * percentile([a.latency_s for a in calm], 99))
    recovered = recovery(history, burst_over, limit_s)
    print(f"calm: {history.summary(steady.started, burst.started)}")
    print(f"burst, steady devices: {history.summary(burst.started, burst_over)}")
    print(f"burst, burst devices: {burst.history.summary()} {dict(burst.history.answers())}")
    print(f"after: {history.summary(burst_over, burst_over + AFTER_S)}")
    print(f"recovered {recovered} s after the burst's last answer (p99 limit {limit_s:.3f} s)")

    for a in [*history, *burst.history]:
        assert a.status in (200, 429, 503), (a.status, a.error, a.body)
        if a.status != 200:
            assert a.retry_after is not None, a.body
            assert float(a.retry_after) >= 0, a.body
    assert recovered is not None, history.answers()
    assert recovered <= RECOVERY_S, history.answers()
    model = check_events(history, town.index, cluster.settings)
    assert model.mismatches == []  # overload changes no rule for what got through


def recovery(history: History, since: float, limit_s: float) -> float | None:
    """Seconds from ``since`` to the first window of ``WINDOW_S`` whose pings were all
    answered 200 with a p99 within ``limit_s``; None if none came."""
    for step in range(int(AFTER_S - WINDOW_S) + 1):
        window = history.between(since + step, since + step + WINDOW_S)
        if len(window) < 0.8 * RATE * WINDOW_S:
            return None  # the steady load is over
        answered = all(a.status == 200 for a in window)
        if answered and percentile([a.latency_s for a in window], 99) <= limit_s:
            return float(step)
    return None


def test_no_device_id_or_precise_position_in_logs_and_every_device_key_expires(
    cluster: Cluster, device_ids: set[str]
) -> None:
    """After all of the above: contract §4's privacy rules, read from the outside."""
    assert privacy_problems(cluster, device_ids) == []

"""Soak (only with --soak): 30 min at 100 pings/s from 200 walkers, with the default caps
(two notifications per device in 48 h, an offer once per device) as in production.

After a warm-up of a third of the run, nothing may keep growing: the service's resident
memory (VmRSS) and Redis's ``used_memory`` are "flat" when the median of the last minute
is less than 10 % above the median of the minute before the one-third mark. And at the
end every key of a device carries a TTL, no answer was a 500, and the events are the
reference model's.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.system.checker import check_events, privacy_problems
from tests.system.cluster import Cluster, put_offer, running_cluster
from tests.system.load import Load, client_session, devices
from tests.system.walkers import Town, walkers
from tools.processes import rss_kib

RATE = 100
PERIOD_S = 2.0
SOAK_S = 1800.0
SAMPLE_EVERY_S = 10.0
MINUTE_S = 60.0
FLAT = 1.10

Sample = tuple[float, int, int]  # seconds into the run, service RSS (KiB), Redis used_memory


@pytest.mark.slow
async def test_soak_memory_stays_flat_and_every_device_key_expires(tmp_path: Path) -> None:
    with running_cluster(tmp_path, device_cap=2) as cluster:
        await soak(cluster)


async def soak(cluster: Cluster) -> None:
    town = Town(cluster.settings)
    url = cluster.urls[0]
    samples: list[Sample] = []
    async with client_session() as session:
        offer = {"title": "Hello", "body": "At {store_name}", "store_ids": town.ids}
        await put_offer(session, url, "hello", {**offer, "starts_at": 0, "ends_at": 4e9})
        fleet = await devices(session, url, walkers(town, RATE * 2, label="soak", seed=9))
        load = Load(session, [url], period_s=PERIOD_S)
        run = asyncio.create_task(load.run(fleet, SOAK_S))
        sampler = asyncio.create_task(sample(cluster, load, samples))
        history = await run
        sampler.cancel()
    third = SOAK_S / 3
    rss = flatness([(t, r) for t, r, _ in samples], third, SOAK_S)
    used = flatness([(t, u) for t, _, u in samples], third, SOAK_S)
    print(f"soak: pings={history.pings()} {history.summary()}")
    print(f"service RSS x{rss:.3f}, Redis used_memory x{used:.3f} from 1/3 to the end")

    assert 500 not in history.statuses(), history.answers()
    assert rss < FLAT, samples
    assert used < FLAT, samples
    assert privacy_problems(cluster, [d.device_id for d in fleet]) == []
    model = check_events(history, town.index, cluster.settings)
    assert model.mismatches == []


async def sample(cluster: Cluster, load: Load, samples: list[Sample]) -> None:
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        while True:
            used = int((await client.info("memory"))["used_memory"])
            rss = rss_kib(cluster.services[0].pid)
            samples.append((load.elapsed(), rss, used))
            await asyncio.sleep(SAMPLE_EVERY_S)
    finally:
        await client.aclose()


def flatness(series: list[tuple[float, int]], mark: float, end: float) -> float:
    """The median of the last minute over the median of the minute before ``mark``."""
    before = [v for t, v in series if mark - MINUTE_S <= t <= mark]
    last = [v for t, v in series if end - MINUTE_S <= t]
    return statistics.median(last) / statistics.median(before)

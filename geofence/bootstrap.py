"""The one place that knows which adapter goes where (ARCHITECTURE.md).

It builds the adapters the settings name (the memory or Redis state store, the stdout or
HTTP push gateway, the metrics) and the services over them, and hands each service only
its slice of the settings and the roles of the store it uses. ``http/app.py``, ``geofence
replay`` and ``geofence stores import`` all get what they run from here; nothing else
imports ``geofence.adapters`` (tests/unit/test_layers.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geofence.adapters.memory import MemoryStore
from geofence.adapters.push_http import HttpPush
from geofence.adapters.push_stdout import StdoutPush
from geofence.adapters.redis import RedisStore
from geofence.adapters.upload_files import read_upload
from geofence.config import Settings, is_cluster_url
from geofence.delivery import Dispatcher
from geofence.domain.delivery import RetryPolicy
from geofence.domain.model import Fence, Rules
from geofence.metrics import Metrics
from geofence.ports import DeviceStore, PushGateway, StateStore
from geofence.service.catalogue import CatalogueService, CatalogueSettings
from geofence.service.coalescer import PingCoalescer
from geofence.service.devices import DeviceRoles, DeviceService
from geofence.service.offers import OfferRoles, OfferService
from geofence.service.pings import PingService, Stages

Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a running service is made of, built from one ``Settings``."""

    store: StateStore
    push: PushGateway
    metrics: Metrics
    catalogue: CatalogueService
    devices: DeviceService
    offers: OfferService
    pings: PingService
    coalescer: PingCoalescer
    dispatcher: Dispatcher


def build(
    settings: Settings, *, store: StateStore | None = None, push: PushGateway | None = None
) -> Services:
    """The adapters the settings name (or the ``store`` and ``push`` given: test doubles)
    and the services over them, wired: a ping that makes a notification wakes delivery."""
    store = store if store is not None else make_store(settings)
    push = push if push is not None else make_push(settings)
    metrics = Metrics()
    catalogue = catalogue_service(settings, store, metrics)
    devices = device_service(settings, store)
    offers = offer_service(settings, store)
    pings = ping_service(settings, store, catalogue, metrics, offers=offers)
    # a ping waits for Redis up to its timeout, queued or in its own call; then 503
    deadline_s = settings.redis_timeout_s if settings.redis_url else None
    policy = RetryPolicy(
        timeout_s=settings.push_timeout_s, backend_cap_s=settings.backend_retry_max_s
    )
    dispatcher = Dispatcher(
        store, push, metrics, policy=policy, concurrency=settings.push_concurrency
    )
    pings.on_notified = dispatcher.wake
    return Services(
        store=store,
        push=push,
        metrics=metrics,
        catalogue=catalogue,
        devices=devices,
        offers=offers,
        pings=pings,
        coalescer=PingCoalescer(devices, pings, deadline_s=deadline_s),
        dispatcher=dispatcher,
    )


def make_store(settings: Settings) -> StateStore:
    """Redis when ``redis_url`` is set, else the in-process store."""
    if settings.redis_url:
        return redis_store(settings, settings.redis_url)
    return memory_store(settings)


def redis_store(settings: Settings, url: str) -> RedisStore:
    """The Redis store: on a Redis Cluster for a ``redis+cluster://`` URL, else on a single
    Redis (its lanes, its 16 shards unless ``redis_shards`` says otherwise)."""
    make = RedisStore.on_cluster if is_cluster_url(url) else RedisStore.from_url
    return make(
        url,
        timeout_s=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        wait_replicas=settings.redis_wait_replicas,
        prefix=settings.redis_prefix,
        shards=settings.redis_shards,
        device_ttl_s=settings.device_ttl_s,
        position_ttl_s=settings.position_ttl_s,
        dead_letter_ttl_s=settings.dead_letter_ttl_s,
        stats_ttl_s=settings.stats_ttl_s,
    )


def memory_store(settings: Settings) -> MemoryStore:
    return MemoryStore(
        device_ttl_s=settings.device_ttl_s,
        position_ttl_s=settings.position_ttl_s,
        dead_letter_ttl_s=settings.dead_letter_ttl_s,
        stats_ttl_s=settings.stats_ttl_s,
    )


def make_push(settings: Settings) -> PushGateway:
    """The HTTP push gateway when ``push_url`` is set, else stdout."""
    if settings.push_url:
        return HttpPush(
            settings.push_url, settings.push_secret or "", timeout_s=settings.push_timeout_s
        )
    return StdoutPush()


def catalogue_service(settings: Settings, store: StateStore, metrics: Metrics) -> CatalogueService:
    cut = CatalogueSettings(
        limits=settings.catalogue_limits,
        h3_resolution=settings.h3_resolution,
        exit_margin_m=settings.exit_margin_m,
        poll_s=settings.catalogue_poll_s,
        stores=settings.stores,
    )
    return CatalogueService(cut, store, metrics, read_file=read_upload)


def device_service(
    settings: Settings, store: DeviceRoles, *, clock: Clock = time.time
) -> DeviceService:
    return DeviceService(settings.id_secret or "", store, clock=clock)


def offer_service(settings: Settings, store: OfferRoles) -> OfferService:
    return OfferService(settings.offer_rules, settings.visit_rules, store)


def ping_service(
    settings: Settings,
    store: StateStore,
    catalogue: CatalogueService,
    metrics: Metrics,
    *,
    offers: OfferService | None = None,
    clock: Clock = time.time,
    stages: Stages | None = None,
) -> PingService:
    """The ping service; its own offer service over ``store`` when none is given;
    ``stages`` times its stages (the benchmarks' seam)."""
    return PingService(
        ping_rules(settings),
        store,
        catalogue,
        metrics,
        offers=offers if offers is not None else offer_service(settings, store),
        clock=clock,
        stages=stages,
    )


def ping_rules(settings: Settings) -> Rules:
    return Rules(screening=settings.screening_rules, visits=settings.visit_rules)


async def replay_service(
    settings: Settings, fences: Sequence[Fence]
) -> tuple[PingService, DeviceStore]:
    """What ``geofence replay`` drives: the ping service HTTP drives, on an in-memory
    store holding ``fences`` as its catalogue, and that store's devices (the replay
    makes each device of the trace)."""
    store = MemoryStore()
    await store.replace_catalogue(list(fences))
    metrics = Metrics()
    catalogue = catalogue_service(settings.replace(stores=""), store, metrics)
    await catalogue.start()
    return ping_service(settings, store, catalogue, metrics), store

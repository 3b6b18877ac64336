"""The aiohttp application: everything is built here and handed to handlers by typed keys."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from geofence.adapters.memory import MemoryStore
from geofence.adapters.push_http import HttpPush
from geofence.adapters.push_stdout import StdoutPush
from geofence.adapters.redis import RedisStore
from geofence.config import Settings
from geofence.delivery import Dispatcher
from geofence.domain.delivery import RetryPolicy
from geofence.domain.errors import Unavailable
from geofence.http.auth import Credentials
from geofence.http.edge import authenticate
from geofence.http.errors import Handler, problem_middleware
from geofence.http.keys import (
    CATALOGUE,
    COALESCER,
    CREDENTIALS,
    DEVICES,
    DISPATCHER,
    METRICS,
    OFFERS,
    PING_GATE,
    PINGS,
    PUSH,
    SETTINGS,
    STORE,
)
from geofence.http.limits import PingGate, ping_gate_middleware
from geofence.http.routes import setup_routes
from geofence.metrics import Metrics
from geofence.persistence import log_persistence
from geofence.ports import PushGateway, StateStore
from geofence.service.catalogue import CatalogueService
from geofence.service.coalescer import PingCoalescer
from geofence.service.devices import DeviceService
from geofence.service.offers import OfferService
from geofence.service.pings import PingService

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    push: PushGateway | None = None,
) -> web.Application:
    """Build the app; tests pass their own store and push doubles explicitly."""
    metrics = Metrics()
    app = web.Application(
        middlewares=[metrics_middleware, problem_middleware, authenticate, ping_gate_middleware],
        client_max_size=settings.max_upload_bytes,
    )
    owned_store = store is None
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STORE] = store if store is not None else make_store(settings)
    app[PUSH] = push if push is not None else make_push(settings)
    app[CREDENTIALS] = Credentials.from_settings(settings)
    app[PING_GATE] = PingGate.from_settings(settings, refused=metrics.refused)
    _add_services(app, settings, metrics)
    app.cleanup_ctx.append(_closing(owned=owned_store))
    app.cleanup_ctx.append(_catalogue_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx)
    app.on_startup.append(_log_persistence)
    setup_routes(app)
    return app


def _add_services(app: web.Application, settings: Settings, metrics: Metrics) -> None:
    store = app[STORE]
    app[CATALOGUE] = CatalogueService(settings, store, metrics)
    app[DEVICES] = DeviceService(settings, store)
    app[OFFERS] = OfferService(settings, store)
    app[PINGS] = PingService(settings, store, app[CATALOGUE], metrics, offers=app[OFFERS])
    # a ping waits for Redis up to its timeout, queued or in its own call; then 503
    deadline_s = settings.redis_timeout_s if settings.redis_url else None
    app[COALESCER] = PingCoalescer(app[DEVICES], app[PINGS], deadline_s=deadline_s)
    policy = RetryPolicy(
        timeout_s=settings.push_timeout_s, backend_cap_s=settings.backend_retry_max_s
    )
    app[DISPATCHER] = Dispatcher(
        store, app[PUSH], metrics, policy=policy, concurrency=settings.push_concurrency
    )
    app[PINGS].on_notified = app[DISPATCHER].wake


def make_store(settings: Settings) -> StateStore:
    if settings.redis_url:
        return RedisStore.from_url(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
            prefix=settings.redis_prefix,
            device_ttl_s=settings.device_ttl_s,
            position_ttl_s=settings.position_ttl_s,
            dead_letter_ttl_s=settings.dead_letter_ttl_s,
        )
    return MemoryStore(
        device_ttl_s=settings.device_ttl_s,
        position_ttl_s=settings.position_ttl_s,
        dead_letter_ttl_s=settings.dead_letter_ttl_s,
    )


def make_push(settings: Settings) -> PushGateway:
    if settings.push_url:
        return HttpPush(
            settings.push_url, settings.push_secret or "", timeout_s=settings.push_timeout_s
        )
    return StdoutPush()


def _closing(*, owned: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[PUSH].close()
        if owned:
            await app[STORE].close()

    return ctx


async def _catalogue_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the catalogue (not fatal if Redis is down: readyz says so) and keep it fresh."""
    catalogue = app[CATALOGUE]
    try:
        await catalogue.start()
    except Unavailable:
        logger.warning("catalogue not loaded at start: state store unavailable; will retry")
    except Exception:
        logger.exception("catalogue not loaded at start; will retry")
    stop = asyncio.Event()
    task = asyncio.create_task(catalogue.watch(stop), name="catalogue-watch")
    yield
    stop.set()
    await stop_task(task, grace_s=app[SETTINGS].redis_timeout_s + 1.0)
    await catalogue.uploads.close()


async def _log_persistence(app: web.Application) -> None:
    """Say at start when Redis would lose the state on a restart (``/readyz`` says it too)."""
    await log_persistence(app[STORE])


async def _dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Drain the outbox while the app runs; on shutdown, stop and wait (bounded)."""
    stop = asyncio.Event()
    task = asyncio.create_task(app[DISPATCHER].run(stop), name="dispatcher")
    yield
    stop.set()
    await stop_task(task, grace_s=app[SETTINGS].push_timeout_s + 1.0)


async def stop_task(task: asyncio.Task[None], *, grace_s: float) -> None:
    """Let a task that was asked to stop finish; cancel it after ``grace_s``; never hang."""
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        logger.error("task did not stop", extra={"task": task.get_name()})
    elif not task.cancelled() and task.exception() is not None:
        logger.error("task failed", extra={"task": task.get_name()}, exc_info=task.exception())


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].answered(route, response.status, time.perf_counter() - started)
    return response

"""The aiohttp application: everything is built here and handed to handlers by typed keys."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from geofence import bootstrap
from geofence.config import Settings
from geofence.domain.errors import Unavailable
from geofence.http.auth import IDENTITIES, Credentials, Identities
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
from geofence.persistence import log_persistence
from geofence.ports import PushGateway, StateStore

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    push: PushGateway | None = None,
) -> web.Application:
    """The app over the services the bootstrap builds; tests pass their own store and
    push doubles explicitly."""
    built = bootstrap.build(settings, store=store, push=push)
    app = web.Application(
        middlewares=[metrics_middleware, problem_middleware, authenticate, ping_gate_middleware],
        client_max_size=settings.max_upload_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = built.metrics
    app[STORE] = built.store
    app[PUSH] = built.push
    app[CREDENTIALS] = Credentials.from_settings(settings)
    app[IDENTITIES] = Identities(app[CREDENTIALS], built.devices.verified_ref)
    app[PING_GATE] = PingGate.from_settings(settings, refused=built.metrics.refused)
    app[CATALOGUE] = built.catalogue
    app[DEVICES] = built.devices
    app[OFFERS] = built.offers
    app[PINGS] = built.pings
    app[COALESCER] = built.coalescer
    app[DISPATCHER] = built.dispatcher
    app.cleanup_ctx.append(_closing(owned=store is None))
    app.cleanup_ctx.append(_catalogue_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx)
    app.on_startup.append(_log_persistence)
    setup_routes(app)
    return app


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

"""Replay a trace offline through the same pipeline the service runs.

"Now" is the latest ts seen so far, so a replay of old pings gives the events the service
gave when they arrived live; pings go one by one, in file order, as they would arrive.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec

from geofence.adapters.memory import MemoryStore
from geofence.adapters.traces import TracePoint
from geofence.config import Settings
from geofence.domain.devices import DeviceProfile, device_ref
from geofence.domain.model import Fence
from geofence.domain.times import with_times
from geofence.metrics import Metrics
from geofence.service.catalogue import CatalogueService
from geofence.service.pings import PingService


def _replayed(ref: str) -> DeviceProfile:
    """A device of the trace, with location consent (the trace was recorded with it)."""
    return DeviceProfile(ref=ref, token_hash="", consent={"location": True, "offers": True})


async def replay(
    settings: Settings, fences: Iterable[Fence], trace: Iterable[TracePoint]
) -> AsyncIterator[dict[str, Any]]:
    """Every event of the trace, as the service would answer it (times in RFC 3339),
    with its device_id."""
    store = MemoryStore()
    await store.replace_catalogue(list(fences))
    metrics = Metrics()
    catalogue = CatalogueService(settings.replace(stores=""), store, metrics)
    await catalogue.start()
    pings = PingService(settings, store, catalogue, metrics)
    secret = secrets.token_bytes(16)  # pseudonyms for this run only, as in the service
    latest = float("-inf")
    known: set[str] = set()
    for point in trace:
        latest = max(latest, point.ping.ts)
        ref = device_ref(point.device_id, secret)
        if ref not in known:
            known.add(ref)
            await store.create_device(_replayed(ref))
        [result] = await pings.handle(ref, [point.ping], now=latest)
        for event in result.events:
            yield with_times({"device_id": point.device_id, **msgspec.to_builtins(event)})
